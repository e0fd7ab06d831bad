"""Byte sizes, so a limit reads as what it is (64 * MiB) and means the same everywhere."""
KiB = 1024
MiB = 1024 * KiB
