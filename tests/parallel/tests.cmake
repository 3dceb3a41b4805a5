# Context-parallel attention and the context-parallel model on the mpi backend: a GoogleTest
# program started by mpirun, one process per rank, with the runtime's mpirun main (it initialises
# MPI and fails every rank when any rank fails). Each world size is one ctest test; each takes a
# few seconds on 2 cores.
set(loom_parallel_mpirun_env "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")

add_executable(ring_attention_mpirun ${CMAKE_CURRENT_LIST_DIR}/ring_attention_mpirun.cc
               ${CMAKE_CURRENT_LIST_DIR}/../runtime/mpirun_main.cc)
target_link_libraries(ring_attention_mpirun PRIVATE loom_parallel GTest::gtest)
loom_target_options(ring_attention_mpirun)
foreach(np 2 3 4)
  add_test(NAME ring_attention_mpirun.np${np}
           COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} ${np}
                   $<TARGET_FILE:ring_attention_mpirun>)
  # Several processes per test: it takes both of ctest's slots (scripts/test.sh runs -j2), so
  # nothing else shares the cores with it.
  set_tests_properties(ring_attention_mpirun.np${np} PROPERTIES
    ENVIRONMENT "${loom_parallel_mpirun_env}" TIMEOUT 120 SKIP_RETURN_CODE 77
    PROCESSORS 2 LABELS "mpi")
endforeach()

# The executor over every planner on the mpi backend.
add_executable(step_executor_mpirun ${CMAKE_CURRENT_LIST_DIR}/step_executor_mpirun.cc
               ${CMAKE_CURRENT_LIST_DIR}/../runtime/mpirun_main.cc)
target_link_libraries(step_executor_mpirun PRIVATE loom_parallel GTest::gtest)
loom_target_options(step_executor_mpirun)
foreach(np 2 3 4)
  add_test(NAME step_executor_mpirun.np${np}
           COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} ${np}
                   $<TARGET_FILE:step_executor_mpirun>)
  set_tests_properties(step_executor_mpirun.np${np} PROPERTIES
    ENVIRONMENT "${loom_parallel_mpirun_env}" TIMEOUT 120 SKIP_RETURN_CODE 77
    PROCESSORS 2 LABELS "mpi")
endforeach()

# Ring attention on GPUs with K/V on the nccl backend: one GPU per rank, skipped (exit 77) where
# fewer GPUs than ranks are visible.
if(LOOM_HAVE_NCCL)
  add_executable(cuda_ring_attention_mpirun
                 ${CMAKE_CURRENT_LIST_DIR}/cuda_ring_attention_mpirun.cc
                 ${CMAKE_CURRENT_LIST_DIR}/../runtime/mpirun_main.cc)
  target_link_libraries(cuda_ring_attention_mpirun PRIVATE loom_parallel GTest::gtest)
  loom_target_options(cuda_ring_attention_mpirun)
  add_test(NAME cuda_ring_attention_mpirun.np2
           COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} 2
                   $<TARGET_FILE:cuda_ring_attention_mpirun>)
  set_tests_properties(cuda_ring_attention_mpirun.np2 PROPERTIES
    ENVIRONMENT "${loom_parallel_mpirun_env}" TIMEOUT 180 SKIP_RETURN_CODE 77
    PROCESSORS 2 LABELS "mpi")
endif()
