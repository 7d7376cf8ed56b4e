"""The files and folders a build is given, checked before anything is read or written.

Each error names the option, the value and the fix: an option file that is a folder or not
UTF-8 text, an output folder that is a file, and folders nested in one another (an output
folder inside the image folder would be scanned as a domain by the next build, and a store
inside the dataset folder would be published with it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

__all__ = ["read_option_file", "check_folder_option", "check_separate_folders"]


def read_option_file(option: str, path: str | os.PathLike, expected: str, encoding: str = "utf-8") -> str:
    """The text of the file given to ``option`` (``expected`` says what it should hold).

    Raises:
        FileNotFoundError: it does not exist.
        ValueError: it is a folder, or not text in ``encoding``; naming the file and the fix.
    """
    file = Path(path)
    if file.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder; give {expected}.")
    if not file.is_file():
        raise FileNotFoundError(f"{option} {str(path)!r} does not exist; give {expected}.")
    try:
        return file.read_text(encoding=encoding)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{option} {str(path)!r} is not UTF-8 text (byte {error.object[error.start : error.end]!r} at offset "
            f"{error.start}); save it as UTF-8 and run again."
        ) from None


def check_folder_option(option: str, path: str | os.PathLike) -> Path:
    """``path`` as an absolute path, if it is a folder or can be created as one.

    Raises:
        ValueError: it, or a folder above it, is an existing file.
    """
    absolute = Path(path).absolute()
    for folder in (absolute, *absolute.parents):
        if folder.exists():
            if not folder.is_dir():
                problem = "is a file" if folder == absolute else f"cannot be created: {str(folder)!r} is a file"
                raise ValueError(f"{option} {str(path)!r} {problem}; give a folder (it is created if missing).")
            break
    return absolute


def check_separate_folders(folders: Mapping[str, str | os.PathLike | None]) -> None:
    """Refuse folders (option -> path; None: not given) that are the same or lie one inside another.

    Symlinks are resolved, so two names of one folder are the same folder.

    Raises:
        ValueError: naming both options and their values.
    """
    given = {option: path for option, path in folders.items() if path is not None}
    real = {option: Path(os.path.realpath(path)) for option, path in given.items()}
    options = list(real)
    for index, first in enumerate(options):
        for second in options[index + 1 :]:
            if real[first] == real[second]:
                relation = "is the same folder as"
            elif real[first].is_relative_to(real[second]):
                relation = "lies inside"
            elif real[second].is_relative_to(real[first]):
                relation = "holds"
            else:
                continue
            raise ValueError(
                f"{first} {str(given[first])!r} {relation} {second} {str(given[second])!r}; "
                "give them separate folders, neither inside the other."
            )
