"""Property-based fuzz tests of every public C++-backed function (issue 22); see _fuzz.py."""
