"""``STATE_DIR/meta.pt``: the meta-state a replica uses, in the ``--meta`` file format, without torch.

The ``--meta`` format (:func:`adaptd.meta.state.save`) is a ``torch.save`` of a dict of plain
tensors and numbers. A run with a built-in model never imports torch (it costs a second and
hundreds of megabytes), so this module writes torch's zip serialization itself:

* ``<archive>/data.pkl``: a protocol-2 pickle of the dict, each tensor as
  ``torch._utils._rebuild_tensor_v2(storage, 0, (n,), (1,), False, OrderedDict())`` and each
  storage as the persistent id ``("storage", torch.DoubleStorage, "<n>", "cpu", numel)``. The
  globals are written by name, so nothing of torch is imported; they are exactly those
  ``torch.load(..., weights_only=True)`` allows;
* ``<archive>/data/<n>``: each storage's raw little-endian float64 values, aligned to 64 bytes;
* ``<archive>/byteorder``, ``<archive>/version``, ``<archive>/.format_version``,
  ``<archive>/.storage_alignment``: as torch writes them.

A test checks that ``torch.load`` of this file equals what :func:`adaptd.meta.state.save` writes.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

FILE_FORMAT = "adaptd-meta/1"  # adaptd.meta.state.FILE_FORMAT, which imports torch to read it
_ALIGN = 64


class _Global:
    """A global written to the pickle by name (torch's functions and classes, unimported)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # save_reduce wants a callable; never called
        raise TypeError(f"{self.module}.{self.name} is written by name, not called")


_REBUILD = _Global("torch._utils", "_rebuild_tensor_v2")
_DOUBLE_STORAGE = _Global("torch", "DoubleStorage")


class _Storage:
    def __init__(self, key: str, values: np.ndarray) -> None:
        self.key, self.values = key, values


class _Tensor:
    """A 1-D float64 tensor for the pickle; rebuilt by torch from its storage."""

    def __init__(self, storage: _Storage) -> None:
        self.storage = storage

    def __reduce__(self) -> tuple[Any, ...]:
        n = len(self.storage.values)
        return (_REBUILD, (self.storage, 0, (n,), (1,), False, OrderedDict()))


# The pure-Python pickler: the C one offers no save_global to override. Typeshed does not
# describe its internals, hence Any.
_PurePickler: Any = pickle._Pickler  # type: ignore[attr-defined]


class _TorchPickler(_PurePickler):
    """The pure-Python pickler, whose ``save_global`` can be given a name instead of an object."""

    dispatch = _PurePickler.dispatch.copy()

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            return ("storage", _DOUBLE_STORAGE, obj.key, "cpu", len(obj.values))
        return None


_TorchPickler.dispatch[_Global] = _TorchPickler.save_global


def payload(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``--meta`` file's dict for a meta-state given as ``MetaState.to_dict()`` (arrays as
    NumPy; :func:`write` turns them into tensors)."""
    model = {k: list(v) if isinstance(v, tuple) else v for k, v in meta.get("model", {}).items()}
    content = {"format": FILE_FORMAT, "theta0": np.asarray(meta["theta0"], dtype=np.float64),
               "B": np.asarray(meta["B"], dtype=np.float64),
               "G": np.asarray(meta["G"], dtype=np.float64),
               "tasks": int(meta["tasks"]), "alpha": float(meta["alpha"]), "model": model}
    if meta.get("scaler") is not None:  # plain lists, as adaptd.meta.state.save writes them
        content["scaler"] = meta["scaler"]
    return content


def dumps(content: dict[str, Any], archive: str = "meta") -> bytes:
    """``content`` (NumPy 1-D arrays become float64 tensors) in torch's zip format."""
    storages: list[_Storage] = []

    def tensors(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            storage = _Storage(str(len(storages)), np.ascontiguousarray(value, dtype="<f8"))
            storages.append(storage)
            return _Tensor(storage)
        if isinstance(value, dict):
            return {k: tensors(v) for k, v in value.items()}
        return value

    pickled = io.BytesIO()
    _TorchPickler(pickled, protocol=2).dump(tensors(content))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        _entry(zf, f"{archive}/data.pkl", pickled.getvalue())
        _entry(zf, f"{archive}/.format_version", b"1")
        _entry(zf, f"{archive}/.storage_alignment", str(_ALIGN).encode())
        _entry(zf, f"{archive}/byteorder", sys.byteorder.encode())
        for storage in storages:
            _entry(zf, f"{archive}/data/{storage.key}", storage.values.tobytes())
        _entry(zf, f"{archive}/version", b"3\n")
    return out.getvalue()


def _entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    # torch maps storages straight out of the file: their bytes start on a 64-byte boundary,
    # padded with an extra field in the local header as torch's own writer does.
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    offset = zf.fp.tell() + 30 + len(name.encode())  # type: ignore[union-attr]
    pad = (-(offset + 4)) % _ALIGN
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
    zf.writestr(info, data)


def write(meta: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``meta`` (``MetaState.to_dict()``) to ``path`` in the ``--meta`` format, atomically
    (temporary file, fsync, rename). Blocks on the disk; raises OSError when it refuses."""
    path = Path(path)
    data = dumps(payload(meta), archive=path.stem or "meta")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path
