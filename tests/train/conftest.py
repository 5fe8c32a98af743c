"""The training tests use the root conftest's `data_dir` and `tiny_config`."""

import train_testlib  # noqa: F401  (puts configs/ on sys.path)
