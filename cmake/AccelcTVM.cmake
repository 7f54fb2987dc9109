# Locate the TVM FFI and TVM runtime headers/libraries for accelc's C++ parts.
#
# Inputs (cache variables, all optional):
#   ACCELC_TVM_FFI_ROOT  directory laid out like the `tvm_ffi` Python package:
#                        include/ (tvm/ffi/*.h, dlpack/) and lib/libtvm_ffi.so
#   ACCELC_TVM_ROOT      directory laid out like the `tvm` Python package:
#                        lib/libtvm_runtime.so (and optionally include/)
#   ACCELC_RUNNER_RPATH  explicit install RPATH for accelc binaries (;-list); overrides the
#                        computed one.
#   Python_EXECUTABLE    interpreter whose site-packages hold `tvm` and `tvm_ffi`; used only for
#                        the roots not given above.
#
# A root left empty is found through Python WITHOUT importing the package (importlib's
# find_spec): `import tvm_ffi` may import torch and `import tvm` loads the compiler library,
# both slow. When cross-compiling, both roots must be given (e.g. unzipped aarch64 wheels).
#
# Outputs:
#   accelc::tvm_ffi      imported shared library (+ include dirs, C++17)
#   accelc::tvm_runtime  imported shared library (+ include dirs if present)
#   ACCELC_TVM_FFI_LIB_DIR, ACCELC_TVM_LIB_DIR
#   ACCELC_RUNTIME_RPATH     install RPATH list for executables linking the two libraries
#   accelc_link_tvm_runtime(<target>)  links both libraries (runtime kept even if unreferenced)
#                                      and sets the install RPATH.

set(ACCELC_TVM_FFI_ROOT "" CACHE PATH "Root of tvm_ffi (include/, lib/libtvm_ffi.so); empty: from Python")
set(ACCELC_TVM_ROOT "" CACHE PATH "Root of tvm (lib/libtvm_runtime.so); empty: from Python")
set(ACCELC_RUNNER_RPATH "" CACHE STRING "Install RPATH for accelc binaries; empty: computed")

set(_accelc_relpath_from_scripts "")
if(NOT ACCELC_TVM_FFI_ROOT OR NOT ACCELC_TVM_ROOT)
  if(CMAKE_CROSSCOMPILING)
    message(FATAL_ERROR
      "accelc: cross-compiling needs -DACCELC_TVM_FFI_ROOT=... and -DACCELC_TVM_ROOT=... "
      "(the target's tvm_ffi/ and tvm/ package folders, e.g. from PyPI's aarch64 wheels); "
      "the host Python's libraries are for the wrong architecture.")
  endif()
  # `-DPython_EXECUTABLE=.venv/bin/python` (untyped, relative) is not made absolute by CMake and
  # FindPython would then silently pick another interpreter; resolve it against the source dir
  # (keep the venv symlink: resolving it would leave the venv).
  if(DEFINED Python_EXECUTABLE AND NOT IS_ABSOLUTE "${Python_EXECUTABLE}")
    get_filename_component(_accelc_py "${Python_EXECUTABLE}" ABSOLUTE BASE_DIR "${CMAKE_SOURCE_DIR}")
    if(NOT EXISTS "${_accelc_py}")
      get_filename_component(_accelc_py "${Python_EXECUTABLE}" ABSOLUTE BASE_DIR "${CMAKE_BINARY_DIR}")
    endif()
    set(Python_EXECUTABLE "${_accelc_py}" CACHE FILEPATH "Python interpreter" FORCE)
  endif()
  find_package(Python 3.10 COMPONENTS Interpreter REQUIRED)
  # Prints: tvm_ffi dir | tvm dir | sysconfig scripts dir | sysconfig purelib dir
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c [=[
import importlib.util, os, sysconfig
def pkg(name):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return ""
    return os.path.realpath(list(spec.submodule_search_locations)[0])
print(pkg("tvm_ffi"))
print(pkg("tvm"))
print(os.path.realpath(sysconfig.get_path("scripts")))
print(os.path.realpath(sysconfig.get_path("purelib")))
]=]
    OUTPUT_VARIABLE _accelc_py_out
    RESULT_VARIABLE _accelc_py_rc
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _accelc_py_rc EQUAL 0)
    message(FATAL_ERROR "accelc: running ${Python_EXECUTABLE} to locate tvm/tvm_ffi failed")
  endif()
  string(REPLACE "\n" ";" _accelc_py_out "${_accelc_py_out}")
  list(GET _accelc_py_out 0 _accelc_py_ffi)
  list(GET _accelc_py_out 1 _accelc_py_tvm)
  list(GET _accelc_py_out 2 _accelc_py_scripts)
  list(GET _accelc_py_out 3 _accelc_py_purelib)
  if(NOT ACCELC_TVM_FFI_ROOT)
    if(NOT _accelc_py_ffi)
      message(FATAL_ERROR "accelc: ${Python_EXECUTABLE} has no `tvm_ffi` package "
                          "(pip install apache-tvm-ffi) and ACCELC_TVM_FFI_ROOT is not set")
    endif()
    set(_accelc_ffi_root "${_accelc_py_ffi}")
  endif()
  if(NOT ACCELC_TVM_ROOT)
    if(NOT _accelc_py_tvm)
      message(FATAL_ERROR "accelc: ${Python_EXECUTABLE} has no `tvm` package "
                          "(pip install apache-tvm) and ACCELC_TVM_ROOT is not set")
    endif()
    set(_accelc_tvm_root "${_accelc_py_tvm}")
  endif()
  # Where a wheel's scripts land relative to its site-packages, for this interpreter's
  # default install scheme (venv: ../lib/python3.X/site-packages).
  file(RELATIVE_PATH _accelc_relpath_from_scripts "${_accelc_py_scripts}" "${_accelc_py_purelib}")
endif()
if(ACCELC_TVM_FFI_ROOT)
  set(_accelc_ffi_root "${ACCELC_TVM_FFI_ROOT}")
endif()
if(ACCELC_TVM_ROOT)
  set(_accelc_tvm_root "${ACCELC_TVM_ROOT}")
endif()

# --- tvm_ffi -------------------------------------------------------------------------------
find_library(ACCELC_TVM_FFI_LIBRARY NAMES tvm_ffi PATHS "${_accelc_ffi_root}/lib"
             NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
find_path(ACCELC_TVM_FFI_INCLUDE_DIR NAMES tvm/ffi/function.h PATHS "${_accelc_ffi_root}/include"
          NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
if(NOT ACCELC_TVM_FFI_LIBRARY OR NOT ACCELC_TVM_FFI_INCLUDE_DIR)
  message(FATAL_ERROR "accelc: no lib/libtvm_ffi.so + include/tvm/ffi/function.h under ${_accelc_ffi_root}")
endif()
get_filename_component(ACCELC_TVM_FFI_LIB_DIR "${ACCELC_TVM_FFI_LIBRARY}" DIRECTORY)
set(_accelc_ffi_includes "${ACCELC_TVM_FFI_INCLUDE_DIR}")
# dlpack ships inside include/ in the wheel; older layouts had it in a sibling folder.
if(NOT EXISTS "${ACCELC_TVM_FFI_INCLUDE_DIR}/dlpack/dlpack.h")
  find_path(_accelc_dlpack_dir NAMES dlpack/dlpack.h
            PATHS "${_accelc_ffi_root}/include" "${_accelc_ffi_root}/3rdparty/dlpack/include"
            NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
  if(_accelc_dlpack_dir)
    list(APPEND _accelc_ffi_includes "${_accelc_dlpack_dir}")
  endif()
endif()
if(NOT TARGET accelc::tvm_ffi)
  add_library(accelc::tvm_ffi SHARED IMPORTED GLOBAL)
  set_target_properties(accelc::tvm_ffi PROPERTIES
    IMPORTED_LOCATION "${ACCELC_TVM_FFI_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${_accelc_ffi_includes}"
    INTERFACE_COMPILE_FEATURES cxx_std_17)
endif()

# --- tvm runtime -----------------------------------------------------------------------------
find_library(ACCELC_TVM_RUNTIME_LIBRARY NAMES tvm_runtime PATHS "${_accelc_tvm_root}/lib"
             NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
if(NOT ACCELC_TVM_RUNTIME_LIBRARY)
  message(FATAL_ERROR "accelc: no lib/libtvm_runtime.so under ${_accelc_tvm_root}")
endif()
get_filename_component(ACCELC_TVM_LIB_DIR "${ACCELC_TVM_RUNTIME_LIBRARY}" DIRECTORY)
if(NOT TARGET accelc::tvm_runtime)
  add_library(accelc::tvm_runtime SHARED IMPORTED GLOBAL)
  set_target_properties(accelc::tvm_runtime PROPERTIES
    IMPORTED_LOCATION "${ACCELC_TVM_RUNTIME_LIBRARY}"
    INTERFACE_LINK_LIBRARIES accelc::tvm_ffi)
  if(EXISTS "${_accelc_tvm_root}/include/tvm")
    set_target_properties(accelc::tvm_runtime PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${_accelc_tvm_root}/include")
  endif()
endif()

# --- install RPATH ---------------------------------------------------------------------------
# Why this list (first hit wins; DT_RUNPATH, so LD_LIBRARY_PATH still overrides):
#  1. $ORIGIN/<scripts->site-packages>/tvm_ffi/lib and .../tvm/lib: a wheel's script installed
#     into any prefix/venv of the same Python minor version finds the libs of the tvm wheels
#     installed next to it, even if the venv is moved or the wheel was built elsewhere.
#  2. The absolute folders found at configure time: editable installs, build trees, and
#     installs where tvm lives in a different site-packages than accelc (e.g. a venv with
#     --system-site-packages).
#  3. When the roots were given explicitly (cross builds, bundles): $ORIGIN and $ORIGIN/../lib,
#     so copying libtvm_runtime.so/libtvm_ffi.so next to the binary (or into ../lib) works.
# libtvm_runtime.so itself only has RUNPATH $ORIGIN but needs libtvm_ffi.so from another
# folder; that works because the executable links libtvm_ffi.so directly (the loader finds it
# through the executable's RUNPATH first and reuses it by SONAME).
set(ACCELC_RUNTIME_RPATH "")
if(ACCELC_RUNNER_RPATH)
  set(ACCELC_RUNTIME_RPATH "${ACCELC_RUNNER_RPATH}")
else()
  if(NOT ACCELC_TVM_FFI_ROOT AND NOT ACCELC_TVM_ROOT AND DEFINED _accelc_relpath_from_scripts
     AND NOT _accelc_relpath_from_scripts STREQUAL "")
    list(APPEND ACCELC_RUNTIME_RPATH
      "$ORIGIN/${_accelc_relpath_from_scripts}/tvm_ffi/lib"
      "$ORIGIN/${_accelc_relpath_from_scripts}/tvm/lib")
  endif()
  if(ACCELC_TVM_FFI_ROOT OR ACCELC_TVM_ROOT)
    list(APPEND ACCELC_RUNTIME_RPATH "$ORIGIN" "$ORIGIN/../lib")
  endif()
  if(NOT CMAKE_CROSSCOMPILING)
    list(APPEND ACCELC_RUNTIME_RPATH "${ACCELC_TVM_FFI_LIB_DIR}" "${ACCELC_TVM_LIB_DIR}")
  endif()
  list(REMOVE_DUPLICATES ACCELC_RUNTIME_RPATH)
endif()

message(STATUS "accelc: libtvm_ffi     ${ACCELC_TVM_FFI_LIBRARY}")
message(STATUS "accelc: libtvm_runtime ${ACCELC_TVM_RUNTIME_LIBRARY}")
message(STATUS "accelc: install RPATH  ${ACCELC_RUNTIME_RPATH}")

function(accelc_link_tvm_runtime target)
  # --no-as-needed: the runner references no symbol of libtvm_runtime.so, but it must be loaded
  # (it registers the Relax VM executable loader that vm_load_executable needs).
  target_link_options(${target} PRIVATE "LINKER:--no-as-needed")
  target_link_libraries(${target} PRIVATE accelc::tvm_ffi accelc::tvm_runtime ${CMAKE_DL_LIBS})
  set_target_properties(${target} PROPERTIES
    BUILD_RPATH "${ACCELC_TVM_FFI_LIB_DIR};${ACCELC_TVM_LIB_DIR}"
    INSTALL_RPATH "${ACCELC_RUNTIME_RPATH}"
    BUILD_WITH_INSTALL_RPATH OFF)
endfunction()
