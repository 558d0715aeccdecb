# The wheels' exported CMake targets (e.g. std_msgs::std_msgs__rosidl_generator_py) carry the include
# directories of the machine that built them (/opt/python/cp311-cp311/include/python3.11 and
# .../site-packages/numpy/_core/include), which CMake rejects as non-existent. This file, injected with
# CMAKE_PROJECT_INCLUDE (so an interface package's CMakeLists.txt stays a plain colcon package), defers a call
# to the end of the configure step that rewrites those non-existent paths to DCMIF_PYTHON_INCLUDE_DIR and
# DCMIF_NUMPY_INCLUDE_DIR (the venv's). Paths that exist are left alone; nothing outside the build tree is
# touched. Used by scripts/build_interfaces.sh and by the colcon build of test/test_ros_workspace.py; a ROS 2
# install from apt needs none of this.
function(_dcmif_fix_wheel_include_dirs)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_t IN LISTS _targets)
    get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_new "")
    set(_changed FALSE)
    foreach(_d IN LISTS _dirs)
      if(NOT EXISTS "${_d}" AND _d MATCHES "/include/python3\\.[0-9]+$")
        set(_d "${DCMIF_PYTHON_INCLUDE_DIR}")
        set(_changed TRUE)
      elseif(NOT EXISTS "${_d}" AND _d MATCHES "/numpy/(_core/)?include$")
        set(_d "${DCMIF_NUMPY_INCLUDE_DIR}")
        set(_changed TRUE)
      endif()
      list(APPEND _new "${_d}")
    endforeach()
    if(_changed)
      list(REMOVE_DUPLICATES _new)
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new}")
      message(STATUS "dcmif: include dirs of ${_t} -> ${_new}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _dcmif_fix_wheel_include_dirs)
