"""Converts the raw Planetoid files of Cora and CiteSeer into initlab's embedded, pickle-free
copies (run once; the package never reads the raw files):

  python tools/convert_planetoid.py RAW_DIR [OUT_DIR]

RAW_DIR holds ind.{cora,citeseer}.{x,y,tx,ty,allx,ally,graph,test.index} (github.com/
kimiyoung/planetoid, MIT); OUT_DIR defaults to initlab/data/embedded. The raw files are read
with the package's allow-list unpickler and written with `initlab.data.planetoid.pack` as
compressed npz; the script checks that the embedded copy reads back identically.
"""

import os
import sys

import numpy as np

from initlab.data import planetoid


def main(raw_dir: str, out_dir: str) -> None:
  for name in planetoid.NAMES:
    example = planetoid.read_raw(raw_dir, name)
    path = os.path.join(out_dir, planetoid.embedded_file(name))
    np.savez_compressed(path, **planetoid.pack(example))
    with np.load(path, allow_pickle=False) as arrays:
      back = planetoid.unpack(arrays)
    for key, value in example.items():
      assert np.array_equal(value, back[key]) and value.dtype == back[key].dtype, (name, key)
    print(
      f'{path}: {os.path.getsize(path)} bytes, {len(example["labels"])} nodes, '
      f'{len(example["senders"])} directed edges'
    )


if __name__ == '__main__':
  here = os.path.dirname(os.path.abspath(__file__))
  main(
    sys.argv[1],
    sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, '..', 'initlab', 'data', 'embedded'),
  )
