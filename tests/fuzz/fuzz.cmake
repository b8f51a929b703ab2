# fuzz.cmake — libFuzzer targets (configure with CC=clang -DPOOLD_FUZZ=ON).
# Each target links only the modules it exercises, built with the fuzzer's
# instrumentation and ASan+UBSan. None links libpq or sees its headers:
# fuzz_request stubs the registry and the tenant tables, whose headers name
# the database's types only as incomplete structs.
set(_fuzz_flags -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -g -O1)

function(poold_fuzz name)
  add_executable(${name} tests/fuzz/${name}.c ${ARGN})
  target_compile_options(${name} PRIVATE ${_fuzz_flags})
  target_link_options(${name} PRIVATE ${_fuzz_flags})
  target_link_libraries(${name} PRIVATE PkgConfig::JANSSON PkgConfig::MHD
                        PkgConfig::GNUTLS Threads::Threads m)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/include)
endfunction()

poold_fuzz(fuzz_rules src/rules.c src/jsonfast.c src/strbuf.c src/utf8.c)
poold_fuzz(fuzz_request src/handlers.c src/process_api.c src/pool_api.c
           src/admin_api.c src/messages_api.c src/metrics.c src/strbuf.c src/jsonfast.c src/utf8.c src/orgid.c src/log.c
           src/rules.c src/pool.c src/status.c src/clock.c
           src/keys.c src/ratelimit.c src/dashboard.c
           ${CMAKE_BINARY_DIR}/dashboard_assets.c)
