#!/usr/bin/env python3
"""Independent MRTD computation (written from the TDX module ABI description, not from our Rust
code), used once to produce the expected values in README.md. Usage: mrtd.py OVMF.fd."""
import hashlib
import struct
import sys
import uuid

data = open(sys.argv[1], "rb").read()
footer_guid = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
tdx_guid = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le
end = len(data) - 32
assert data[end - 16:end] == footer_guid
size = struct.unpack_from("<H", data, end - 18)[0]
table = data[end - size:end - 18]
offset = None
while len(table) >= 18:
    entry_size, guid = struct.unpack_from("<H", table, len(table) - 18)[0], table[-16:]
    if guid == tdx_guid:
        offset = struct.unpack_from("<I", table, len(table) - entry_size)[0]
    table = table[:-entry_size]
desc = len(data) - offset
sig, _, version, count = struct.unpack_from("<4sIII", data, desc)
assert sig == b"TDVF" and version == 1
sections = [struct.unpack_from("<IIQQII", data, desc + 16 + 32 * i) for i in range(count)]


def add(h, gpa):
    h.update(b"MEM.PAGE.ADD".ljust(16, b"\0") + struct.pack("<Q", gpa) + bytes(104))


def extend(h, gpa, page):
    for i in range(16):
        h.update(b"MR.EXTEND".ljust(16, b"\0") + struct.pack("<Q", gpa + 256 * i) + bytes(104))
        h.update(page[256 * i:256 * (i + 1)])


for two_pass in (False, True):
    h = hashlib.sha384()
    for off, raw, addr, msize, kind, attrs in sections:
        if attrs & 2:
            continue
        pages = range(msize // 4096)
        content = lambda p: (data[off:off + raw] + bytes(msize))[p * 4096:(p + 1) * 4096]
        if two_pass:
            for p in pages:
                add(h, addr + p * 4096)
            if attrs & 1:
                for p in pages:
                    extend(h, addr + p * 4096, content(p))
        else:
            for p in pages:
                add(h, addr + p * 4096)
                if attrs & 1:
                    extend(h, addr + p * 4096, content(p))
    print("two-pass" if two_pass else "single", h.hexdigest())
