# Toolchain file for cross-building accelc's C++ parts (the runner) for 64-bit ARM Linux.
#
# accelc does this by itself on first use (accelc/cross.py: `accelc run` on an aarch64
# artifact, `accelc package`), into ~/.cache/accelc/aarch64/. By hand:
#
# Needs (Debian): apt-get install g++-aarch64-linux-gnu   [qemu-user to run the result here]
# The TVM runtime for the target comes from PyPI's aarch64 wheels:
#   pip download --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
#       --python-version 3.11 apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post0 -d wheels
#   unzip wheels/apache_tvm_ffi-*.whl 'tvm_ffi/*' -d aarch64 ; unzip wheels/apache_tvm-*.whl 'tvm/lib/*' 'tvm/include/*' -d aarch64
# Then:
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DACCELC_TVM_FFI_ROOT=$PWD/aarch64/tvm_ffi -DACCELC_TVM_ROOT=$PWD/aarch64/tvm
#   cmake --build build/aarch64 -j2
#   qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=aarch64/tvm_ffi/lib:aarch64/tvm/lib \
#       build/aarch64/runner/accelc-run model.so --input x=x.npy
# The installed binary's RUNPATH is $ORIGIN:$ORIGIN/../lib, so on the device copy
# libtvm_ffi.so and libtvm_runtime.so next to accelc-run (or into ../lib), or set
# LD_LIBRARY_PATH.
#
# Options: -DACCELC_CROSS_PREFIX=/opt/x/bin/aarch64-linux-gnu- (compiler prefix, default on
# PATH), -DACCELC_CROSS_SYSROOT=... (target libraries, default Debian's multiarch cross root).

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(ACCELC_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "Cross toolchain prefix")
set(ACCELC_CROSS_SYSROOT "/usr/aarch64-linux-gnu" CACHE PATH "Target libraries (Debian multiarch cross root)")
# CMake re-reads this file for its compiler checks (try_compile) without the cache: pass both on.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES ACCELC_CROSS_PREFIX ACCELC_CROSS_SYSROOT)

set(CMAKE_C_COMPILER "${ACCELC_CROSS_PREFIX}gcc")
set(CMAKE_CXX_COMPILER "${ACCELC_CROSS_PREFIX}g++")

set(CMAKE_FIND_ROOT_PATH "${ACCELC_CROSS_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

find_program(ACCELC_QEMU_AARCH64 qemu-aarch64)
if(ACCELC_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${ACCELC_QEMU_AARCH64};-L;${ACCELC_CROSS_SYSROOT}")
endif()
