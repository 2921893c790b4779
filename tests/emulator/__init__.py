"""Tests of the fal emulator (runner.emulator) over real loopback HTTP."""
