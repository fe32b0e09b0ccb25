"""The one door into a BioImage.IO package: its container and every file it names, checked first.

A package is read by ``bioimageio.spec`` and ``bioimageio.core`` only after
:func:`check_package` has passed it. The checks cost a directory listing, the description
(at most :data:`MAX_DESCRIPTION_BYTES`) and one streamed hash of each file that has one;
nothing is unpacked and no file is read whole into memory.

* The container (a ``.zip``): a readable zip of at most :data:`MAX_MEMBERS` members, none a
  symbolic link, encrypted, stored under an absolute or ``..`` name, or compressed by a method
  Python cannot read; every member declares at most :data:`MAX_FILE_BYTES` (all together
  :data:`MAX_TOTAL_BYTES`) and, above :data:`RATIO_FLOOR` bytes, a compression ratio of at most
  :data:`MAX_RATIO` (a "zip bomb" declares gigabytes compressed a thousand-fold); weights
  that would not fit in half the free memory are refused too. Python's ``zipfile`` never
  inflates a member past its declared size, so these limits bound every later read.
* The description (``rdf.yaml``): one per package, plain YAML data read with a safe loader
  (a ``!!python/...`` tag is refused, not constructed), a mapping of at most
  :data:`MAX_NODES` values.
* The files it names (weights, test tensors, documentation, covers, attachments): relative
  paths inside the package (never absolute, ``file://`` or through ``..``), present as plain
  files (a folder package: no symbolic link out of it), matching the SHA-256 the description
  gives them. Weights are never fetched from a URL; other files at a URL are never read.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..common.errors import ModelFileError

__all__ = ["CheckedPackage", "check_package", "description_name"]

#: the description's file names, as ``bioimageio.spec`` looks for them (also ``NAME.rdf.yaml``)
DESCRIPTION_NAMES = ("rdf.yaml", "bioimageio.yaml", "model.yaml")
MAX_MEMBERS = 10_000
#: largest file a package may hold (declared, uncompressed)
MAX_FILE_BYTES = 4 * 2**30
MAX_TOTAL_BYTES = 16 * 2**30
#: largest compression ratio of a member above RATIO_FLOOR bytes (weights compress ~1.1x; the
#: test output of an untrained model, nearly constant, ~200x, but it is small)
MAX_RATIO = 100
RATIO_FLOOR = 64 * 2**20
MAX_DESCRIPTION_BYTES = 2**20
#: most values (mappings, lists, scalars) in a description, counted through YAML aliases
MAX_NODES = 200_000
#: the description's fields that name a file by a plain string (format 0.4)
_FILE_FIELDS = ("documentation", "covers", "test_inputs", "test_outputs", "sample_inputs", "sample_outputs")  # fmt: skip
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class CheckedPackage:
    """A package that passed :func:`check_package`.

    Attributes
    ----------
    source : Path
        What to hand to ``bioimageio.spec``: the zip, or the folder.
    description : str
        The name of its description file (``rdf.yaml``).
    content : dict
        The description, as plain data.
    files : dict of str to str
        Each file the description names (its path in the package) -> where it is named.
    """

    source: Path
    description: str
    content: dict[str, Any] = field(repr=False)
    files: dict[str, str] = field(default_factory=dict)


def description_name(names: list[str], where: object = "the package") -> str | None:
    """The description file among ``names`` (None if there is none); two are refused."""
    # as bioimageio.spec looks for it: any member (in a subfolder too) named so, or NAME.rdf.yaml
    found = [n for n in names if any(n == d or n.endswith("." + d) for d in DESCRIPTION_NAMES)]
    if len(found) > 1:
        raise ModelFileError(
            f"{where}: refused: it holds {len(found)} package descriptions "
            f"({', '.join(sorted(found))}); a BioImage.IO package has exactly one"
        )
    return found[0] if found else None


def check_package(source: str | os.PathLike) -> CheckedPackage:
    """Check a package (a ``.zip``, a folder, or the description file in one) before any use.

    Raises
    ------
    ModelFileError
        What is wrong, in one line: a damaged or hostile container, a description that is not
        plain YAML data, or a file named by it that is outside the package, missing, or not
        the file its SHA-256 names.
    """
    path = Path(source)
    if path.is_file() and zipfile.is_zipfile(path):
        return _ZipPackage(path).check()
    folder, name = (path, None) if path.is_dir() else (path.parent, path.name)
    return _FolderPackage(folder, name, shown=path).check()


class _Package:
    """What zip and folder packages share: the description, its files, their hashes."""

    shown: Path

    def names(self) -> list[str]:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def open(self, name: str):
        raise NotImplementedError

    def root(self) -> Path:
        raise NotImplementedError

    def refuse(self, why: str) -> ModelFileError:
        return ModelFileError(f"{self.shown}: refused: {why}")

    def check(self) -> CheckedPackage:
        self.check_container()
        name = self.description_name()
        content = self.read_description(name)
        files = {}
        for where, ref, sha in _references(content, self.refuse):
            member = self.check_reference(where, ref)
            if member is not None:
                files[member] = where
                if where.startswith("weights."):
                    self.check_fits(member, where)
                self.check_hash(member, where, sha)
        return CheckedPackage(self.root(), name, content, files)

    def check_container(self) -> None:
        """Nothing to check for a folder: its files are checked as the description names them."""

    def description_name(self) -> str:
        name = description_name(self.names(), self.shown)
        if name is None:
            raise ModelFileError(f"{self.shown} is not a BioImage.IO package: it holds no rdf.yaml")
        return name

    def read_description(self, name: str) -> dict[str, Any]:
        if self.size(name) > MAX_DESCRIPTION_BYTES:
            raise self.refuse(
                f"its {name} is {self.size(name) / 2**20:.1f} MiB; a package description is "
                f"plain text of a few kB (at most {MAX_DESCRIPTION_BYTES // 2**20} MiB)"
            )
        with self.open(name) as fh:
            raw = fh.read(MAX_DESCRIPTION_BYTES + 1)
        return parse_description(raw, name, self.shown)

    def check_reference(self, where: str, ref: str) -> str | None:
        """The member a reference names (None: a URL that is never read); or a refusal."""
        if _URL.match(ref):
            if ref.lower().startswith(("http://", "https://")):
                if where.startswith("weights."):
                    raise self.refuse(
                        f"its {where} is at {ref!r}, outside the package: napari-unet never "
                        "downloads weights; use a package that carries its weights (the "
                        "zip that bioimage.io's Download button gives)"
                    )
                return None
            raise self.refuse(f"its {where} points at {ref!r}, outside the package")
        parts = PurePosixPath(ref.replace("\\", "/")).parts
        if ref.startswith(("/", "\\")) or _DRIVE.match(ref) or ".." in parts:
            raise self.refuse(
                f"its {where} points at {ref!r}, outside the package; a package's files are "
                "inside it (napari-unet never reads files from elsewhere for a package)"
            )
        member = "/".join(p for p in parts if p != ".")
        if member not in self.names():
            raise self.refuse(
                f"its {where} names {member!r}, which is not in the package (an incomplete "
                "or altered package: get it again from where it came from)"
            )
        return member

    def check_fits(self, member: str, where: str) -> None:
        """Weights are read whole into memory: refuse those larger than half the free memory."""
        from ..common.device import available_memory

        free, size = available_memory(), self.size(member)
        if free is not None and size > free // 2:
            raise ModelFileError(
                f"{self.shown}: its {where} {member!r} unpacks to {_gib(size)}, more than half "
                f"the memory free on this machine ({_gib(free)}): it cannot be loaded here"
            )

    def check_hash(self, member: str, where: str, sha: str | None) -> None:
        if sha is None:
            return
        digest = hashlib.sha256()
        try:
            with self.open(member) as fh:
                for chunk in iter(lambda: fh.read(2**20), b""):
                    digest.update(chunk)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise self.refuse(f"its file {member!r} cannot be read ({err})") from err
        if digest.hexdigest().lower() != sha.lower():
            raise self.refuse(
                f"{member!r} ({where}) does not match the SHA-256 that the description gives "
                "for it: the file was changed or swapped after the package was made; get the "
                "package again from where it came from"
            )


class _ZipPackage(_Package):
    def __init__(self, path: Path) -> None:
        self.shown = path
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise ModelFileError(f"{path}: not a readable zip file ({err})") from err
        self.infos = {i.filename: i for i in self.zip.infolist()}
        self._names = [n for n in self.infos if not n.endswith("/")]

    def names(self) -> list[str]:
        return self._names

    def size(self, name: str) -> int:
        return self.infos[name].file_size

    def open(self, name: str):
        return self.zip.open(self.infos[name])

    def root(self) -> Path:
        return self.shown

    def check(self) -> CheckedPackage:
        try:
            return super().check()
        finally:
            self.zip.close()

    def check_container(self) -> None:
        infos = self.zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise self.refuse(f"it holds {len(infos)} files (at most {MAX_MEMBERS})")
        if len(self.infos) != len(infos):
            raise self.refuse("it holds two members of the same name (an ambiguous zip)")
        total = 0
        for info in infos:
            self._check_member(info)
            total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise self.refuse(
                f"its files unpack to {_gib(total)} (at most {_gib(MAX_TOTAL_BYTES)} in all)"
            )

    def _check_member(self, info: zipfile.ZipInfo) -> None:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts:
            raise self.refuse(f"its member {name!r} is stored outside the package's folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise self.refuse(
                f"its member {name!r} is a symbolic link; a package holds plain files only"
            )
        if info.flag_bits & 0x1:
            raise self.refuse(
                f"its member {name!r} is encrypted; napari-unet opens unencrypted packages only"
            )
        if info.compress_type not in _READABLE:
            raise self.refuse(
                f"its member {name!r} is compressed by a method Python's zipfile cannot read "
                f"(method {info.compress_type})"
            )
        if info.file_size > MAX_FILE_BYTES:
            raise self.refuse(
                f"its member {name!r} unpacks to {_gib(info.file_size)} "
                f"(at most {_gib(MAX_FILE_BYTES)} per file)"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and ratio > MAX_RATIO:
            raise self.refuse(
                f"its member {name!r} unpacks to {_gib(info.file_size)} from "
                f"{info.compress_size / 2**20:.1f} MiB ({ratio:.0f}x compressed; a zip bomb?); "
                f"model files compress at most {MAX_RATIO}x"
            )


_READABLE = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


class _FolderPackage(_Package):
    def __init__(self, folder: Path, name: str | None, shown: Path) -> None:
        self.folder, self._name, self.shown = folder, name, shown
        self._real = Path(os.path.realpath(folder))

    def names(self) -> list[str]:
        if self._name is not None:
            return [self._name]
        return sorted(p.name for p in self.folder.iterdir() if p.is_file())

    def size(self, name: str) -> int:
        return (self.folder / name).stat().st_size

    def open(self, name: str):
        return open(self.folder / name, "rb")

    def root(self) -> Path:
        return self.folder

    def description_name(self) -> str:
        if self._name is not None:
            return self._name
        return super().description_name()

    def check_reference(self, where: str, ref: str) -> str | None:
        if _URL.match(ref) or ref.startswith(("/", "\\")) or _DRIVE.match(ref):
            return super().check_reference(where, ref)
        parts = PurePosixPath(ref.replace("\\", "/")).parts
        if ".." in parts:
            return super().check_reference(where, ref)
        member = "/".join(p for p in parts if p != ".")
        target = self.folder / member
        real = Path(os.path.realpath(target))
        if not real.is_relative_to(self._real):
            raise self.refuse(
                f"its {where} names {member!r}, a link to {str(real)!r} outside the package's "
                "folder (napari-unet never reads files from elsewhere for a package)"
            )
        if not target.is_file():
            raise self.refuse(
                f"its {where} names {member!r}, which is not in the package's folder (an "
                "incomplete or altered package: get it again from where it came from)"
            )
        if target.stat().st_size > MAX_FILE_BYTES:
            raise self.refuse(f"its file {member!r} is larger than {_gib(MAX_FILE_BYTES)}")
        return member


def parse_description(raw: bytes, name: str, where: object) -> dict[str, Any]:
    """The description as plain data: YAML read safely, no ``!!python`` (or other) objects."""
    from ruyaml import YAML
    from ruyaml.error import MarkedYAMLError, YAMLError

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelFileError(f"{where}: its {name} is not UTF-8 text ({err.reason})") from err
    try:
        content = YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if "python/" in str(problem) or "python/" in str(err):
            raise ModelFileError(
                f"{where}: refused: its {name} carries a '!!python/...' tag (a request to build "
                "Python objects, which can run code); a package description is plain data"
            ) from err
        mark = getattr(err, "problem_mark", None) if isinstance(err, MarkedYAMLError) else None
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ModelFileError(f"{where}: its {name} is not valid YAML ({problem}{at})") from err
    if not isinstance(content, dict):
        raise ModelFileError(
            f"{where}: its {name} is not a package description (a YAML mapping of fields)"
        )
    _count_nodes(content, where, name)
    return content


def _count_nodes(content: Any, where: object, name: str) -> None:
    """Refuse a description of more than :data:`MAX_NODES` values (e.g. an alias bomb)."""
    count, stack = 0, [content]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ModelFileError(
                f"{where}: refused: its {name} expands to more than {MAX_NODES} values (YAML "
                "aliases nested to blow up its size?)"
            )
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _references(content: dict[str, Any], refuse) -> Iterator[tuple[str, str, str | None]]:
    """``(where, path, sha256)`` of each file the description names (``config`` excluded)."""

    def walk(node: Any, where: str) -> Iterator[tuple[str, str, str | None]]:
        if isinstance(node, dict):
            source = node.get("source")
            if isinstance(source, str):
                yield f"{where}.source".lstrip("."), source, _sha(node.get("sha256"), where)
            for key, value in node.items():
                if not (where == "" and key == "config") and key != "source":
                    yield from walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}[{i}]")

    def _sha(value: Any, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _SHA256.match(value):
            raise refuse(f"its {where.lstrip('.')}.sha256 is not a SHA-256 ({value!r})")
        return value

    yield from walk(content, "")
    for key in _FILE_FIELDS:  # format 0.4: plain strings
        value = content.get(key)
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(item, str):
                yield (f"{key}[{i}]" if isinstance(value, list) else key), item, None
    attachments = content.get("attachments")
    files = attachments.get("files") if isinstance(attachments, dict) else None
    for i, item in enumerate(files if isinstance(files, list) else []):
        if isinstance(item, str):
            yield f"attachments.files[{i}]", item, None
    weights = content.get("weights")
    for fmt, entry in (weights if isinstance(weights, dict) else {}).items():
        if not isinstance(entry, dict):
            continue
        arch = entry.get("architecture")  # format 0.4: "file.py:Name" (a file) or "module.Name"
        if isinstance(arch, str) and ":" in arch and not _URL.match(arch):
            sha = _sha(entry.get("architecture_sha256"), f"weights.{fmt}.architecture")
            yield f"weights.{fmt}.architecture", arch.rsplit(":", 1)[0], sha
        deps = entry.get("dependencies")  # format 0.4: "conda:environment.yaml"
        if isinstance(deps, str) and ":" in deps and not _URL.match(deps):
            yield f"weights.{fmt}.dependencies", deps.split(":", 1)[1], None


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
