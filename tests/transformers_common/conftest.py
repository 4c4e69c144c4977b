# The vendored files hold mixins, not tests of their own: they run through tests/test_modeling_common.py.
collect_ignore_glob = ["test_*.py"]
