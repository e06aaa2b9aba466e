"""Build script: one Cython extension that compiles the C kernel in with it.

The kernel's public header lives in csrc/; build_py copies it into the package
(fastcheck/include/) so that installed copies can hand it to other extensions
through fastcheck.get_include().
"""

import os
import shutil
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLIC_HEADERS = ["fastcheck.h"]


class build_py_with_headers(build_py):
    """Copy the kernel's public headers from csrc/ into the built package."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "fastcheck", "include")
        os.makedirs(target, exist_ok=True)
        for name in PUBLIC_HEADERS:
            shutil.copy2(os.path.join(HERE, "csrc", name), os.path.join(target, name))


compile_args = [] if sys.platform == "win32" else ["-O3"]
link_args = [] if sys.platform == "win32" else ["-pthread"]

extensions = [
    Extension(
        "fastcheck._kernel",
        sources=["fastcheck/_kernel.pyx", "csrc/kernel.c"],
        include_dirs=["csrc"],
        depends=["csrc/fastcheck.h", "csrc/kernel_impl.h", "fastcheck/_ckernel.pxd"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    ),
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_py": build_py_with_headers},
)
