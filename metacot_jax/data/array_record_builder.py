"""The base of the project's TFDS builders: array_record files, read without TensorFlow."""

from __future__ import annotations

import inspect

import tensorflow_datasets as tfds
from etils import epath


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder):
  """Writes array_record, which `as_data_source` reads with random access and no TensorFlow.

  Abstract (no `_info`, `_split_generators`, `_generate_examples`), so TFDS does
  not register it as a dataset.
  """

  def __init__(self, *, file_format: str | None = "array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10's own `code_path` needs the `importlib_resources` backport
    # (not installed on Python >= 3.9) for builders inside a package.
    return epath.Path(inspect.getfile(cls))
