# Third-party dependencies, all from Debian packages (scripts/setup.sh installs them).
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(absl REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(GTest REQUIRED)
find_package(benchmark REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(MPI REQUIRED COMPONENTS CXX)

# OpenBLAS, OpenMP flavour: our kernels parallelise with OpenMP, and the OpenMP build of OpenBLAS
# runs single-threaded when called from inside a parallel region instead of oversubscribing.
find_path(LOOM_CBLAS_INCLUDE cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/aarch64-linux-gnu/openblas-openmp
  NO_DEFAULT_PATH)
find_library(LOOM_OPENBLAS openblas
  PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp
  NO_DEFAULT_PATH)
if(NOT LOOM_CBLAS_INCLUDE OR NOT LOOM_OPENBLAS)
  message(FATAL_ERROR "OpenBLAS (OpenMP flavour) not found: run scripts/setup.sh "
                      "(Debian package libopenblas-openmp-dev)")
endif()
add_library(loom_blas INTERFACE)
target_include_directories(loom_blas SYSTEM INTERFACE ${LOOM_CBLAS_INCLUDE})
target_link_libraries(loom_blas INTERFACE ${LOOM_OPENBLAS} OpenMP::OpenMP_CXX)

# The Python interpreter that imports torch: the PyTorch reference tests need it. Debian's
# python3-torch installs for /usr/bin/python3, which need not be the first python3 on PATH.
set(LOOM_TORCH_PYTHON "" CACHE FILEPATH "Python interpreter with torch and numpy")
if(NOT LOOM_TORCH_PYTHON)
  foreach(candidate /usr/bin/python3 python3)
    find_program(_loom_py NAMES ${candidate} NO_CACHE)
    if(_loom_py)
      execute_process(COMMAND ${_loom_py} -c "import torch, numpy"
                      RESULT_VARIABLE _loom_py_rc OUTPUT_QUIET ERROR_QUIET)
      if(_loom_py_rc EQUAL 0)
        set(LOOM_TORCH_PYTHON ${_loom_py} CACHE FILEPATH "Python with torch" FORCE)
        break()
      endif()
    endif()
    unset(_loom_py)
  endforeach()
endif()
if(NOT LOOM_TORCH_PYTHON)
  message(FATAL_ERROR "No python3 that imports torch and numpy: run scripts/setup.sh "
                      "(Debian packages python3-torch python3-numpy)")
endif()
message(STATUS "loom: PyTorch reference interpreter ${LOOM_TORCH_PYTHON}")
