"""Latent shards as WebDataset tars: the ``format=webdataset`` writer of ``musicdiff-encode``.

Same directory contract as the default latent shards (:mod:`musicdiff.data.latent_writer`): ``index.json``
(autoencoder facts, shard list, done/failed files; ``"shard_format": "webdataset"``) rewritten after
each shard, every shard written under a temporary name and renamed, so an interrupted run leaves
a consistent directory and a rerun continues. Each encoded file is one sample of
``shard_NNNNN.tar``:

* ``<key>.latents.npy``: float32 ``[D, L]`` latents of the whole file (``L = ceil(frames / ratio)``);
* ``<key>.mask.npy``: bool ``[L]`` padding mask (True = real audio; all True for whole files);
* ``<key>.json``: ``path`` (relative to the audio root), ``seconds_start`` (0.0: the file's start),
  ``seconds_total``, ``num_frames``, ``num_latents``, ``duration``, ``metadata`` (caption, tags) and
  ``gain`` for files scaled to full scale.

Read by :class:`~musicdiff.data.webdataset.WebDatasetShards` (``dataset=webdataset_latents``).
"""

from __future__ import annotations

import json

import numpy as np

from musicdiff.data.latent_writer import INDEX_NAME, _ShardWriter, _write_atomic
from musicdiff.data.webdataset_io import encode_npy, write_tar

SHARD_FORMAT = "webdataset"


class TarShardWriter(_ShardWriter):
    """:class:`~musicdiff.data.latent_writer._ShardWriter` that flushes a WebDataset tar instead of safetensors."""

    def flush(self) -> None:
        number = len(self.index["shards"])
        name = f"shard_{number:05d}"
        if self.tensors:
            samples = []
            for line in self.lines:
                latents = self.tensors[line["key"]].numpy()
                record = {k: v for k, v in line.items() if k != "key"}
                samples.append({"__key__": f"{number:05d}_{int(line['key']):06d}",
                                "latents.npy": encode_npy(latents.astype(np.float32)),
                                "mask.npy": encode_npy(np.ones(latents.shape[1], dtype=bool)),
                                "json": json.dumps({"seconds_start": 0.0, **record}, sort_keys=True).encode("utf-8")})
            write_tar(self.out_dir / f"{name}.tar", samples)
            self.index["shards"].append({"name": name, "num_items": len(self.lines)})
            for line in self.lines:
                self.index["done"][line["path"]] = name
        _write_atomic(self.out_dir / INDEX_NAME, json.dumps(self.index, indent=1, sort_keys=True).encode("utf-8"))
        self.tensors, self.lines = {}, []
