#!/usr/bin/env bash
# Launches the SEV-SNP confidential VM of deployment snp-1gpu-disk.
#
# Rendered by `cargo xtask launch render` from the deployment model; do not edit it: change the
# model and render again, so the launch and the measurement keep using the same values.
#
# Usage: launch-snp.sh [--dry-run]
#   --dry-run  print the QEMU command and the expected launch measurement; start nothing.
# Environment: QEMU names the QEMU binary (default qemu-system-x86_64, version 9.2.1 or 10.x);
# CVM_CPUID_DEVICE replaces /dev/cpu/0/cpuid, CVM_IOMMU_DEVICE replaces /dev/iommu (for tests).
#
# Every path is relative to this script's directory, so the directory can be moved as a whole.
set -euo pipefail

die() {
  printf '%s: error: %s\n' launch-snp.sh "$*" >&2
  exit 1
}

dry_run=0
if [[ $# -gt 1 ]]; then
  printf 'usage: %s [--dry-run]\n' launch-snp.sh >&2
  exit 2
fi
case "${1-}" in
  --dry-run) dry_run=1 ;;
  '') ;;
  *)
    printf 'usage: %s [--dry-run]\n' launch-snp.sh >&2
    exit 2
    ;;
esac

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
artifacts_dir="${here}"
firmware=/usr/share/ovmf/OVMF.amdsev.fd
disk="${artifacts_dir}"/disk.qcow2
serial_log="${here}"/logs/console.log

# Checks a file against the sha256 recorded when this script was rendered.
verify() {
  local label="$1" path="$2" expected="$3" actual
  if [[ -z "$expected" ]]; then
    die "$label was missing from the artifacts directory when this script was rendered; build it (cargo xtask guest build) and render again (cargo xtask launch render)"
  fi
  [[ -f "$path" ]] || die "$label not found at $path; build it (cargo xtask guest build) or restore it"
  actual="$(sha256sum < "$path")" || die "cannot read $path"
  actual="${actual%% *}"
  if [[ "$actual" != "$expected" ]]; then
    die "$label at $path has sha256 $actual, but $expected was recorded; rebuild (cargo xtask guest build) and render again"
  fi
}
# firmware: expected sha256 from the model (launch.firmware.sha256).
verify firmware "${firmware}" 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
# disk.qcow2: expected sha256 from none (the file was missing at render time).
verify disk.qcow2 "${disk}" ''

# The C-bit position, from the model.
cbitpos=51

print_measurement() {
  printf '%s\n' 'expected SEV-SNP launch measurement: unknown (there was no measurements.json when this script was rendered; run cargo xtask measure, then cargo xtask launch render)'
}

# Refuses to start on a host that cannot run this guest.
check_host() {
  [[ -e /dev/sev ]] || die "this host has no /dev/sev: SEV-SNP is not enabled (SNP and SMEE in the BIOS, kvm_amd with sev_snp=1); run cargo xtask host check"
  local snp
  snp="$(cat /sys/module/kvm_amd/parameters/sev_snp 2>/dev/null || true)"
  [[ "$snp" == Y ]] || die "KVM has no SEV-SNP support (/sys/module/kvm_amd/parameters/sev_snp is '${snp:-absent}'); run cargo xtask host check"
  [[ -r /dev/kvm && -w /dev/kvm ]] || die "/dev/kvm is not usable by this user; run as root or join the kvm group"
  check_vfio 'GPU (H100)' 0000:c1:00.0
  return 0
}

# Refuses a passed-through device that is not bound to vfio-pci.
check_vfio() {
  local kind="$1" address="$2" driver
  [[ -e "/sys/bus/pci/devices/$address" ]] || die "$kind $address is not on this host (lspci -D); fix launch.gpus or launch.nvswitches in the model"
  driver="$(readlink -- "/sys/bus/pci/devices/$address/driver" || true)"
  driver="${driver##*/}"
  [[ "$driver" == vfio-pci ]] || die "$kind $address is bound to ${driver:-no driver}, not vfio-pci; bind it to vfio-pci (cargo xtask host apply) before launching"
}

qemu="${QEMU:-qemu-system-x86_64}"
# VFIO backend: iommufd where this host's QEMU has the object and the kernel has /dev/iommu,
# else the legacy VFIO container.
iommufd_object=()
vfio_iommufd=''
qemu_objects="$("$qemu" -object help 2>/dev/null || true)"
if [[ -e "${CVM_IOMMU_DEVICE:-/dev/iommu}" ]] && grep -qxF '  iommufd' <<<"$qemu_objects"; then
  iommufd_object=(-object 'iommufd,id=iommufd0')
  vfio_iommufd=',iommufd=iommufd0'
fi
# QEMU options are comma-separated key=value lists inside one argument, not array separators.
# shellcheck disable=SC2054
qemu_args=(
  # KVM with the pinned vCPU model and count the launch measurement was computed for.
  -accel kvm
  -cpu EPYC-Genoa
  -smp 8
  -m 32768M
  # SEV-SNP guest: private memory from guest_memfd behind a memfd backend of exactly -m.
  -machine q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off
  -object memory-backend-memfd,id=ram1,size=32768M,share=true,prealloc=false
  -object sev-snp-guest,id=sev0,cbitpos="${cbitpos}",reduced-phys-bits=1,policy=0x30000
  # Firmware: one stateless image loaded with -bios (no pflash, no NVRAM).
  -bios "${firmware}"
  # The disk with the dm-verity root, attached read-only.
  -drive file="${disk//,/,,}",if=none,id=disk0,format=qcow2,readonly=on
  -device virtio-blk-pci,drive=disk0,disable-legacy=on,iommu_platform=on,bootindex=0
  # One iommufd context shared by the passed-through devices, when this host's QEMU and kernel have iommufd (probed above); else none, and VFIO uses its legacy container.
  "${iommufd_object[@]}"
  # GPU (H100) 0000:c1:00.0 behind its own PCIe root port.
  -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,port=1
  -device vfio-pci,host=0000:c1:00.0,bus=rp1"${vfio_iommufd}"
  # 64-bit MMIO window for the GPU BARs: 524288 MiB.
  -fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=524288
  # User-mode network: host port 9443 to the guest's HTTPS endpoint on port 443.
  -netdev user,id=net0,hostfwd=tcp::9443-:443
  -device virtio-net-pci,netdev=net0,disable-legacy=on,iommu_platform=on
  # Serial console to the log file; no display, no default devices, and no reset (a confidential guest cannot be reset).
  -chardev file,id=serial0,path="${serial_log//,/,,}"
  -serial chardev:serial0
  -nodefaults
  -display none
  -no-reboot
)

# Prints the command as one line a shell reads back into the same words.
print_command() {
  local word separator=''
  for word in "$qemu" "${qemu_args[@]}"; do
    if [[ "$word" =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then
      printf '%s%s' "$separator" "$word"
    else
      printf '%s%q' "$separator" "$word"
    fi
    separator=' '
  done
  printf '\n'
}

# Refuses a QEMU that lacks what this guest needs.
check_qemu() {
  command -v -- "$qemu" >/dev/null || die "$qemu not found; install QEMU 9.2.1 or 10.x (qemu-system-x86), or set QEMU"
  local objects cpus model=EPYC-Genoa
  objects="$("$qemu" -object help 2>&1)" || die "$qemu -object help failed: $objects"
  grep -qxF '  sev-snp-guest' <<<"$objects" || die "$qemu has no sev-snp-guest object; SEV-SNP needs QEMU 9.1 or later (9.2.1 and 10.x are tested)"
  cpus="$("$qemu" -cpu help 2>&1)" || die "$qemu -cpu help failed: $cpus"
  grep -qw -- "$model" <<<"$cpus" || die "$qemu has no vCPU model $model (EPYC-Turin needs a QEMU newer than 10.0); set launch.vcpu-type to one it has, then measure and render again"
}

if ((dry_run)); then
  print_command
  print_measurement
  exit 0
fi

check_qemu
check_host
mkdir -p -- "$(dirname -- "$serial_log")" || die "cannot create the directory of the serial log $serial_log"
print_measurement >&2
printf '%s: starting; the serial console goes to %s\n' launch-snp.sh "$serial_log" >&2
exec "$qemu" "${qemu_args[@]}"
