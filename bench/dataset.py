"""A reproducible benchmark data set: the same seed and size always give the same bytes.

Four parts, in the proportions of the default 1050 MiB set (350 MiB text, 350 MiB random,
200 MiB repeated blocks, ~150 MiB small files) so that every tool meets compressible,
incompressible, deduplicable and metadata-heavy input. Every file and directory gets one
fixed mtime, so that a reused set looks the same to the tools' file caches as a fresh one.
A stamp file records the parameters; a set with a matching stamp is reused, not rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

MIB = 1 << 20
DEFAULT_SIZE_MIB = 1050
DEFAULT_SEED = 20240611
FORMAT_VERSION = 2
FIXED_MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z

# Shares of the default set, in MiB of 1050.
TEXT_SHARE = 350
RANDOM_SHARE = 350
REPEATED_SHARE = 200
SMALL_FILES_AT_DEFAULT = 20_000
SMALL_MAX = 16 * 1024

# File sizes (MiB) cycled through for the large files, so files are neither all alike nor tiny.
LARGE_SIZES_MIB = (48, 8, 24, 2, 64, 16, 1, 32)
REPEATED_FILE_MIB = 20
BLOCK_POOL = 32

HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "work"


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set is made of; equal specs give byte-identical trees."""

    seed: int = DEFAULT_SEED
    size_mib: int = DEFAULT_SIZE_MIB
    version: int = FORMAT_VERSION

    @property
    def scale(self) -> float:
        return self.size_mib / DEFAULT_SIZE_MIB

    @property
    def text_bytes(self) -> int:
        return max(MIB // 4, int(TEXT_SHARE * MIB * self.scale))

    @property
    def random_bytes(self) -> int:
        return max(MIB // 4, int(RANDOM_SHARE * MIB * self.scale))

    @property
    def repeated_files(self) -> int:
        return max(2, round(REPEATED_SHARE * self.scale / REPEATED_FILE_MIB))

    @property
    def repeated_file_mib(self) -> int:
        """20 MiB at the default size; smaller sets get smaller files, not fewer than two."""
        return max(2, min(REPEATED_FILE_MIB, round(REPEATED_SHARE * self.scale / 2)))

    @property
    def small_files(self) -> int:
        return max(10, round(SMALL_FILES_AT_DEFAULT * self.scale))


@dataclass
class DatasetInfo:
    """What was generated: the stamp contents, also quoted in the benchmark report."""

    seed: int
    size_mib: int
    version: int
    total_bytes: int
    total_files: int
    parts: dict[str, dict[str, int]]

    def describe(self) -> list[str]:
        """One line per part, for the report."""
        lines = []
        for name, part in self.parts.items():
            lines.append(f"{name}: {part['files']} files, {part['bytes'] / MIB:.1f} MiB")
        lines.append(
            f"total: {self.total_files} files, {self.total_bytes / MIB:.1f} MiB "
            f"(seed {self.seed}, format v{self.version})"
        )
        return lines


def _large_sizes(total: int) -> Iterator[int]:
    """File sizes (bytes) cycling through LARGE_SIZES_MIB, the last one cut to fit `total`."""
    left = total
    i = 0
    while left > 0:
        size = min(left, LARGE_SIZES_MIB[i % len(LARGE_SIZES_MIB)] * MIB)
        yield size
        left -= size
        i += 1


class _LogText:
    """Log-like lines from a seeded vocabulary: compressible, but no two 4 MiB spans alike."""

    def __init__(self, rng: random.Random) -> None:
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.rng = rng
        vocab = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(4000)]
        self.messages = [" ".join(rng.choices(vocab, k=rng.randint(3, 14))) for _ in range(20_000)]
        self.components = ["".join(rng.choices(letters, k=rng.randint(4, 9))) for _ in range(40)]
        self.levels = ["DEBUG", "INFO", "INFO", "INFO", "NOTICE", "WARN", "ERROR"]
        self.clock = 1_600_000_000_000  # milliseconds
        self.counter = 0

    def block(self, approx: int) -> bytes:
        """About `approx` bytes of whole lines."""
        rng = self.rng
        n = max(1, approx // 110)
        msgs = rng.choices(self.messages, k=n)
        comps = rng.choices(self.components, k=n)
        levels = rng.choices(self.levels, k=n)
        steps = rng.choices(range(1, 2000), k=n)
        pids = rng.choices(range(100, 65536), k=n)
        out = []
        clock, counter = self.clock, self.counter
        for msg, comp, level, step, pid in zip(msgs, comps, levels, steps, pids, strict=True):
            clock += step
            counter += 1
            sec, ms = divmod(clock, 1000)
            out.append(f"{sec}.{ms:03d} {level} {comp}[{pid}]: {msg} seq={counter:x}\n")
        self.clock, self.counter = clock, counter
        return "".join(out).encode()

    def exact(self, size: int) -> bytes:
        """Exactly `size` bytes (the last line may be cut)."""
        parts: list[bytes] = []
        have = 0
        while have < size:
            chunk = self.block(min(4 * MIB, size - have + 200))
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)[:size]


def _write_text(root: Path, spec: DatasetSpec, rng: random.Random) -> dict[str, int]:
    gen = _LogText(rng)
    files = total = 0
    for i, size in enumerate(_large_sizes(spec.text_bytes)):
        path = root / "text" / f"log-{i:03d}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            left = size
            while left > 0:
                piece = gen.exact(min(4 * MIB, left))
                f.write(piece)
                left -= len(piece)
        files += 1
        total += size
    return {"files": files, "bytes": total}


def _write_random(root: Path, spec: DatasetSpec, rng: random.Random) -> dict[str, int]:
    files = total = 0
    for i, size in enumerate(_large_sizes(spec.random_bytes)):
        path = root / "random" / f"blob-{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            left = size
            while left > 0:
                n = min(4 * MIB, left)
                f.write(rng.randbytes(n))
                left -= n
        files += 1
        total += size
    return {"files": files, "bytes": total}


def _write_repeated(root: Path, spec: DatasetSpec, rng: random.Random) -> dict[str, int]:
    """Files made of 1 MiB blocks from a small pool: a motif repeats within each file, motifs
    overlap across files, and the last file is an exact copy of the first."""
    pool = [rng.randbytes(MIB) for _ in range(BLOCK_POOL)]
    count = spec.repeated_files
    files = total = 0
    for i in range(count):
        path = root / "repeated" / f"r{i // 4:02d}" / f"blocks-{i:03d}.img"
        path.parent.mkdir(parents=True, exist_ok=True)
        seed_i = 0 if i == count - 1 else i  # the last file repeats the first whole
        start = (seed_i * 5) % BLOCK_POOL
        motif = 4 + seed_i % 5
        with path.open("wb") as f:
            for k in range(spec.repeated_file_mib):
                f.write(pool[(start + k % motif) % BLOCK_POOL])
        files += 1
        total += spec.repeated_file_mib * MIB
    return {"files": files, "bytes": total}


def _write_small(root: Path, spec: DatasetSpec, rng: random.Random) -> dict[str, int]:
    """Many files of 0..16 KiB in nested directories, half text (compressible), half random."""
    text = _LogText(random.Random(rng.random())).exact(4 * MIB)
    files = total = 0
    for i in range(spec.small_files):
        size = rng.randint(0, SMALL_MAX)
        depth = i % 3
        parts = [f"d{i % 20:02d}", f"e{(i // 20) % 25:02d}", f"f{(i // 500) % 4}"][: depth + 1]
        if i % 2:
            name, data = f"n{i:05d}.bin", rng.randbytes(size)
        else:
            off = rng.randrange(0, len(text) - SMALL_MAX)
            name, data = f"n{i:05d}.txt", text[off : off + size]
        path = root.joinpath("small", *parts, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files += 1
        total += size
    return {"files": files, "bytes": total}


NEWEST_NAME = "zz-newest.txt"
NEWEST_TEXT = (
    b"Written last by bench/dataset.py, alone with the newest ctime: borg keeps no files-cache\n"
    b"entry for files whose ctime equals the newest one it saw, and setting the mtimes gives\n"
    b"hundreds of files one coarse-clock ctime, which would make borg re-read them every time.\n"
)


def _fix_mtimes(root: Path) -> None:
    """Give every entry the same mtime, directories last (writing a file touches its dir);
    then, a little later, write one small file so that it alone has the newest ctime."""
    for dirpath, _dirs, names in os.walk(root, topdown=False):
        for name in names:
            os.utime(os.path.join(dirpath, name), (FIXED_MTIME, FIXED_MTIME))
        os.utime(dirpath, (FIXED_MTIME, FIXED_MTIME))
    time.sleep(0.1)  # past the kernel's coarse timestamp granularity
    newest = root / NEWEST_NAME
    newest.write_bytes(NEWEST_TEXT)
    os.utime(newest, (FIXED_MTIME, FIXED_MTIME))
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))


def _stamp_path(data_dir: Path) -> Path:
    return data_dir.parent / f"{data_dir.name}.stamp.json"


def _read_stamp(data_dir: Path) -> DatasetInfo | None:
    try:
        raw = json.loads(_stamp_path(data_dir).read_text())
        return DatasetInfo(**raw)
    except (OSError, ValueError, TypeError):
        return None


def ensure_dataset(
    spec: DatasetSpec, data_dir: Path = DEFAULT_WORK / "data", *, log: bool = True
) -> DatasetInfo:
    """Return the data set under `data_dir`, generating it unless a matching stamp exists."""
    stamp = _read_stamp(data_dir)
    if (
        stamp is not None
        and data_dir.is_dir()
        and (stamp.seed, stamp.size_mib, stamp.version) == (spec.seed, spec.size_mib, spec.version)
    ):
        if log:
            print(f"dataset: reusing {data_dir} ({stamp.total_bytes / MIB:.0f} MiB)", flush=True)
        return stamp
    if log:
        print(
            f"dataset: generating {spec.size_mib} MiB (seed {spec.seed}) in {data_dir}", flush=True
        )
    started = time.perf_counter()
    _stamp_path(data_dir).unlink(missing_ok=True)
    partial = data_dir.parent / f"{data_dir.name}.partial"
    for old in (partial, data_dir):
        if old.exists():
            shutil.rmtree(old)
    partial.mkdir(parents=True)
    rng = random.Random(spec.seed)
    # Each part draws from its own generator, so changing one part's size leaves others alone.
    sub = [random.Random(rng.getrandbits(64)) for _ in range(4)]
    parts = {
        "text (log lines)": _write_text(partial, spec, sub[0]),
        "random (incompressible)": _write_random(partial, spec, sub[1]),
        "repeated 1 MiB blocks": _write_repeated(partial, spec, sub[2]),
        "small files (0..16 KiB)": _write_small(partial, spec, sub[3]),
    }
    _fix_mtimes(partial)
    partial.rename(data_dir)
    info = DatasetInfo(
        seed=spec.seed,
        size_mib=spec.size_mib,
        version=spec.version,
        total_bytes=sum(p["bytes"] for p in parts.values()) + len(NEWEST_TEXT),
        total_files=sum(p["files"] for p in parts.values()) + 1,
        parts=parts,
    )
    _stamp_path(data_dir).write_text(json.dumps(asdict(info), indent=2) + "\n")
    if log:
        print(f"dataset: generated in {time.perf_counter() - started:.1f} s", flush=True)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=DEFAULT_SIZE_MIB)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_WORK / "data")
    args = parser.parse_args()
    info = ensure_dataset(DatasetSpec(seed=args.seed, size_mib=args.size_mib), args.data_dir)
    print("\n".join(info.describe()))


if __name__ == "__main__":
    main()
