#!/bin/sh
# Cargo runner for aarch64 test and bench binaries on an x86_64 host: user-mode qemu with
# Debian's arm64 sysroot for the dynamic loader and libc.
exec qemu-aarch64 -L /usr/aarch64-linux-gnu "$@"
