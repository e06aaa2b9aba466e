"""Build script: one Cython extension that compiles the C kernel in with it.

The public headers live in fastcheck/include/, inside the package, so that the
same folder serves an in-place build and an installed copy (fastcheck.get_include()
returns it):

- fastcheck_capi.h, the C API for other Python extensions, is written there;
- fastcheck.h, the kernel's header, is written in csrc/ (the kernel is plain C and
  builds without this package); every run of this script copies it, and the
  kernel's sources kernel.c and kernel_impl.h, into fastcheck/include/ (generated
  files, ignored by git), like cythonize writes fastcheck/_kernel.c.
"""

import os
import shutil
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
# The kernel's header, and its sources: installed next to fastcheck_capi.h so that a
# plain C program can build the kernel from get_include() alone (README, "The C API").
KERNEL_HEADERS = ["fastcheck.h", "kernel.c", "kernel_impl.h"]


def sync_kernel_headers():
    """Copy the kernel's public headers from csrc/ into fastcheck/include/."""
    target = os.path.join(HERE, "fastcheck", "include")
    os.makedirs(target, exist_ok=True)
    for name in KERNEL_HEADERS:
        source = os.path.join(HERE, "csrc", name)
        copy = os.path.join(target, name)
        if not os.path.exists(source):  # building from a tree without csrc/
            continue
        with open(source, "rb") as f:
            wanted = f.read()
        current = None
        if os.path.exists(copy):
            with open(copy, "rb") as f:
                current = f.read()
        if current != wanted:
            shutil.copyfile(source, copy)


sync_kernel_headers()

compile_args = [] if sys.platform == "win32" else ["-O3"]
link_args = [] if sys.platform == "win32" else ["-pthread"]

extensions = [
    Extension(
        "fastcheck._kernel",
        sources=["fastcheck/_kernel.pyx", "csrc/kernel.c"],
        include_dirs=["csrc", "fastcheck/include"],
        depends=["csrc/fastcheck.h", "csrc/kernel_impl.h", "fastcheck/_ckernel.pxd",
                 "fastcheck/include/fastcheck_capi.h"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    ),
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
)
