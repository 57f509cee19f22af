#!/usr/bin/env python3
"""How long one durable append takes on a filesystem, written the ways the journal's
write-ahead file could write it (BENCHMARKS.md, issue 15): a buffered pwrite + fdatasync (the
write-ahead file before), pwritev2(RWF_DSYNC), O_DIRECT|O_DSYNC, and O_DIRECT + fdatasync (the
write-ahead file now). Each mode overwrites a preallocated, zero-filled 4 MiB file, as the
write-ahead file does.

    python3 benches/sync_modes.py [--dir DIR] [--ops N]

DIR defaults to the current directory (run it in the data dir's filesystem).
"""
import argparse
import mmap
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--dir", default=".")
parser.add_argument("--ops", type=int, default=4000)
args = parser.parse_args()

SIZE = 4 << 20
RECORD = 2300  # about one 2.1 KB event with its record header
path = os.path.join(args.dir, "sync_modes.tmp")
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
try:
    os.pwrite(fd, b"\0" * SIZE, 0)
    os.fsync(fd)
    block = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
    block.write(b"x" * 4096)
    record = b"y" * RECORD
    direct = os.open(path, os.O_RDWR | os.O_DIRECT)
    direct_dsync = os.open(path, os.O_RDWR | os.O_DIRECT | os.O_DSYNC)

    def offset(i):
        return (i * RECORD) % (SIZE - 8192)

    def buffered(i):
        os.pwrite(fd, record, offset(i))
        os.fdatasync(fd)

    def rwf_dsync(i):
        os.pwritev(fd, [record], offset(i), os.RWF_DSYNC)

    def o_direct_o_dsync(i):
        os.pwritev(direct_dsync, [memoryview(block)], offset(i) // 4096 * 4096)

    def o_direct_fdatasync(i):
        os.pwritev(direct, [memoryview(block)], offset(i) // 4096 * 4096)
        os.fdatasync(direct)

    modes = [buffered, rwf_dsync, o_direct_o_dsync, o_direct_fdatasync]
    print(f"{args.ops} appends of {RECORD} bytes each, twice per mode, interleaved")
    for round in range(2):
        for mode in modes:
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(args.ops):
                mode(i)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"round {round + 1} {mode.__name__:20} {wall / args.ops * 1e6:6.0f} µs wall "
                  f"{cpu / args.ops * 1e6:5.0f} µs CPU per append")
finally:
    os.unlink(path)
