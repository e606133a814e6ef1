"""Builds the custom_relu operator: `python setup.py bdist_wheel` (reprobuild's custom_op step runs this)."""

from paddle.utils.cpp_extension import CppExtension, setup

setup(
    name="custom_relu",
    version="0.1.0",
    ext_modules=CppExtension(sources=["relu_op.cc"]),
)
