#!/usr/bin/env bash
# Launches the TDX confidential VM of deployment tdx-1gpu-direct.
#
# Rendered by `cargo xtask launch render` from the deployment model; do not edit it: change the
# model and render again, so the launch and the measurement keep using the same values.
#
# Usage: launch-tdx.sh [--dry-run]
#   --dry-run  print the QEMU command and the expected launch measurement; start nothing.
# Environment: QEMU names the QEMU binary (default qemu-system-x86_64: upstream 10.1 or later, or
# Canonical's TDX build of 9.2.1).
#
# Every path is relative to this script's directory, so the directory can be moved as a whole.
set -euo pipefail

die() {
  printf '%s: error: %s\n' launch-tdx.sh "$*" >&2
  exit 1
}

dry_run=0
if [[ $# -gt 1 ]]; then
  printf 'usage: %s [--dry-run]\n' launch-tdx.sh >&2
  exit 2
fi
case "${1-}" in
  --dry-run) dry_run=1 ;;
  '') ;;
  *)
    printf 'usage: %s [--dry-run]\n' launch-tdx.sh >&2
    exit 2
    ;;
esac

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
artifacts_dir="${here}"
firmware="${artifacts_dir}"/firmware.fd
uki="${artifacts_dir}"/uki.efi
disk="${artifacts_dir}"/disk.qcow2
serial_log="${here}"/serial.log

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
# firmware.fd: expected sha256 from none (the file was missing at render time).
verify firmware.fd "${firmware}" ''
# uki.efi: expected sha256 from none (the file was missing at render time).
verify uki.efi "${uki}" ''
# disk.qcow2: expected sha256 from none (the file was missing at render time).
verify disk.qcow2 "${disk}" ''

print_measurement() {
  printf '%s\n' 'expected TDX MRTD: unknown (there was no measurements.json when this script was rendered; run cargo xtask measure, then cargo xtask launch render)'
}

# Refuses to start on a host that cannot run this guest.
check_host() {
  local tdx
  tdx="$(cat /sys/module/kvm_intel/parameters/tdx 2>/dev/null || true)"
  [[ "$tdx" == Y ]] || die "KVM has no TDX support (/sys/module/kvm_intel/parameters/tdx is '${tdx:-absent}'; boot the host with kvm_intel.tdx=1 and TDX enabled in the BIOS); run cargo xtask host check"
  [[ -r /dev/kvm && -w /dev/kvm ]] || die "/dev/kvm is not usable by this user; run as root or join the kvm group"
  check_vfio 'GPU (H100)' 0000:b4:00.0
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
  -cpu host
  -smp 16
  -m 65536M
  # TDX guest: quote generation through the host's QGS on vsock CID 2, split IRQ chip.
  -object '{"id":"tdx0","qom-type":"tdx-guest","quote-generation-socket":{"cid":"2","port":"4050","type":"vsock"},"sept-ve-disable":true}'
  -object memory-backend-ram,id=ram1,size=65536M
  -machine q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram1,hpet=off
  # Firmware: one stateless image loaded with -bios (no pflash, no NVRAM).
  -bios "${firmware}"
  # Direct boot of the UKI, measured by the firmware (no -initrd or -append).
  -kernel "${uki}"
  # The disk with the dm-verity root, attached read-only.
  -drive file="${disk//,/,,}",if=none,id=disk0,format=qcow2,readonly=on
  -device virtio-blk-pci,drive=disk0,disable-legacy=on,iommu_platform=on
  # One iommufd context shared by the passed-through devices, when this host's QEMU and kernel have iommufd (probed above); else none, and VFIO uses its legacy container.
  "${iommufd_object[@]}"
  # GPU (H100) 0000:b4:00.0 behind its own PCIe root port.
  -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,port=1
  -device vfio-pci,host=0000:b4:00.0,bus=rp1"${vfio_iommufd}"
  # 64-bit MMIO window for the GPU BARs: 262144 MiB.
  -fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=262144
  # User-mode network: host port 8443 to the guest's HTTPS endpoint on port 443.
  -netdev user,id=net0,hostfwd=tcp::8443-:443
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
  command -v -- "$qemu" >/dev/null || die "$qemu not found; install a QEMU with tdx-guest (upstream 10.1 or later), or set QEMU"
  local objects
  objects="$("$qemu" -object help 2>&1)" || die "$qemu -object help failed: $objects"
  grep -qxF '  tdx-guest' <<<"$objects" || die "$qemu has no tdx-guest object; TDX needs upstream QEMU 10.1 or later, or the TDX build of Canonical's PPA"
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
printf '%s: starting; the serial console goes to %s\n' launch-tdx.sh "$serial_log" >&2
exec "$qemu" "${qemu_args[@]}"
