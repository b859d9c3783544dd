# The gpu tests on the emulated device (included by tests/CMakeLists.txt when
# MOE_CUDA=EMULATED): the same test_gpu_*.cpp files, label "emu". Emulated
# kernels run a few thousand times slower than on a GPU, so each test's time
# limit is generous, and tests whose shapes a CPU cannot run in CI time are
# filtered out by name (MOE_EMU_GPU_FILTER), each with its reason.
set(MOE_EMU_TIMEOUT 900)
foreach(src ${MOE_TEST_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  if(NOT name MATCHES "^test_gpu_")
    continue()
  endif()
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE moe moe_app GTest::gtest GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
                                             MOE_BINARY_DIR="${CMAKE_BINARY_DIR}")
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST PROPERTIES LABELS emu
                       TIMEOUT ${MOE_EMU_TIMEOUT}
                       ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE;OMP_NUM_THREADS=1"
                       DISCOVERY_TIMEOUT 60)
endforeach()
add_dependencies(test_gpu_cli moe-train moe-eval moe-bench)
