# `cmake --install build [--prefix DIR]`: the `edda` command, the libraries
# and headers a client or participant service builds against, and a CMake
# package, so a service outside this tree does
#
#   find_package(edda 0.1 REQUIRED)
#   target_link_libraries(my_service PRIVATE edda::sagas edda::client)
#
# (examples/out_of_tree). Layout under the prefix:
#   bin/edda
#   lib/libedda_*.a                 every edda library (all static)
#   include/edda/<module>/*.hpp     config, sagas, base, wire, client, ...
#   include/edda/*.pb.h             the generated protobuf / gRPC headers
#   lib/cmake/edda/                 edda-config.cmake, the exported targets
#   share/edda/default.toml         every setting with its default
#   lib/systemd/system/edda.service the unit (packaging/systemd)
# Included at the end of the top CMakeLists.txt, once every target exists.

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(EDDA_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR}/edda)
set(EDDA_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/edda)

# Every library a client, a participant or an embedded node links, directly
# or through another (static libraries carry their private dependencies to
# whoever links them, so those are exported too). Exported as edda::<name
# without the edda_ prefix>: edda::client, edda::sagas, edda::node, ...
set(_edda_libs edda_config edda_base edda_coord edda_etcd_proto edda_wire
               edda_api_proto edda_storage edda_cluster edda_replication
               edda_broker edda_client edda_txn edda_sagas edda_door
               edda_admin edda_node)

# The targets name their include directories by source and build paths;
# installed, every header is under include/edda.
foreach(_t IN LISTS _edda_libs)
  get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
  set(_wrapped)
  if(_dirs)
    foreach(_d IN LISTS _dirs)
      list(APPEND _wrapped "$<BUILD_INTERFACE:${_d}>")
    endforeach()
  endif()
  list(APPEND _wrapped "$<INSTALL_INTERFACE:${EDDA_INSTALL_INCLUDEDIR}>")
  set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES
                                         "${_wrapped}")
  get_target_property(_dirs ${_t} INTERFACE_SYSTEM_INCLUDE_DIRECTORIES)
  if(_dirs)
    set(_wrapped)
    foreach(_d IN LISTS _dirs)
      list(APPEND _wrapped "$<BUILD_INTERFACE:${_d}>")
    endforeach()
    set_target_properties(${_t} PROPERTIES INTERFACE_SYSTEM_INCLUDE_DIRECTORIES
                                           "${_wrapped}")
  endif()
  string(REGEX REPLACE "^edda_" "" _name ${_t})
  set_target_properties(${_t} PROPERTIES EXPORT_NAME ${_name})
endforeach()

install(TARGETS edda RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS ${_edda_libs} EXPORT edda-targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})

# Headers, by module, as the sources include them ("client/connection.hpp",
# "sagas/saga.hpp", "wire/types.hpp", "config/settings.hpp", ...).
set(_edda_header_dirs config sagas runtime/base runtime/coord runtime/wire
    runtime/storage runtime/cluster runtime/replication runtime/door
    runtime/admin runtime/node actors/broker actors/client actors/txn)
foreach(_d IN LISTS _edda_header_dirs)
  file(GLOB _headers CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/${_d}/*.hpp)
  get_filename_component(_module ${_d} NAME)
  install(FILES ${_headers} DESTINATION ${EDDA_INSTALL_INCLUDEDIR}/${_module})
endforeach()
# The generated headers the public ones include (edda.wire.v1 and the
# edda.api.v1 stubs).
set(_wire_bin ${PROJECT_BINARY_DIR}/runtime/wire)
install(FILES ${_wire_bin}/records.pb.h ${_wire_bin}/broker.pb.h
              ${_wire_bin}/cluster.pb.h ${_wire_bin}/replication.pb.h
              ${_wire_bin}/gen/api.pb.h ${_wire_bin}/gen/api.grpc.pb.h
        DESTINATION ${EDDA_INSTALL_INCLUDEDIR})
# The .proto files, for clients in other languages (examples/python).
install(FILES ${PROJECT_SOURCE_DIR}/runtime/wire/api.proto
              ${PROJECT_SOURCE_DIR}/runtime/wire/broker.proto
              ${PROJECT_SOURCE_DIR}/runtime/wire/cluster.proto
              ${PROJECT_SOURCE_DIR}/runtime/wire/records.proto
              ${PROJECT_SOURCE_DIR}/runtime/wire/replication.proto
        DESTINATION ${CMAKE_INSTALL_DATADIR}/edda/proto)

# The package: edda-config.cmake finds the dependencies the way this build
# does (cmake/FindCAF.cmake for Debian's CAF 0.17, pkg-config for LMDB,
# gRPC and cpp-httplib), then loads the exported targets.
install(EXPORT edda-targets NAMESPACE edda:: FILE edda-targets.cmake
        DESTINATION ${EDDA_INSTALL_CMAKEDIR})
configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/edda-config.cmake.in
  ${PROJECT_BINARY_DIR}/edda-config.cmake
  INSTALL_DESTINATION ${EDDA_INSTALL_CMAKEDIR})
# 0.x: a minor version may break the API, so only the same minor matches.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/edda-config-version.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/edda-config.cmake
              ${PROJECT_BINARY_DIR}/edda-config-version.cmake
              ${PROJECT_SOURCE_DIR}/cmake/FindCAF.cmake
        DESTINATION ${EDDA_INSTALL_CMAKEDIR})

# Settings and the systemd unit. The unit names /usr/local/bin/edda; under
# another prefix it is rewritten to <prefix>/bin/edda when installed.
install(FILES ${PROJECT_SOURCE_DIR}/config/default.toml
              ${PROJECT_SOURCE_DIR}/packaging/systemd/edda.toml
        DESTINATION ${CMAKE_INSTALL_DATADIR}/edda)
set(_unit ${PROJECT_SOURCE_DIR}/packaging/systemd/edda.service)
install(CODE "
  file(READ \"${_unit}\" _text)
  string(REPLACE \"/usr/local/bin/edda\"
         \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/edda\" _text \"\${_text}\")
  set(_dest \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\")
  message(STATUS \"Installing: \${_dest}/edda.service\")
  file(MAKE_DIRECTORY \"\${_dest}\")
  file(WRITE \"\${_dest}/edda.service\" \"\${_text}\")
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES \"\${_dest}/edda.service\")")
