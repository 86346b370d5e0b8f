# Cross-build for aarch64 Linux with Debian's cross toolchain and multiarch arm64 libraries:
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install gcc-aarch64-linux-gnu qemu-user libc6:arm64 \
#                   libopenblas-dev:arm64 zlib1g-dev:arm64 libpng-dev:arm64 \
#                   libjpeg62-turbo-dev:arm64 check:arm64
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DDIGITS_CUDA=OFF
# ctest then runs the test executables under qemu-aarch64 (CMAKE_CROSSCOMPILING_EMULATOR).
# scripts/test-aarch64 does all of it.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(DIGITS_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${DIGITS_CROSS_TRIPLE}-gcc)

# The arm64 libraries are Debian multiarch packages (/usr/lib/aarch64-linux-gnu, /usr/include);
# the cross compiler searches those directories itself, and CMake's find_library looks in
# /usr/lib/<CMAKE_LIBRARY_ARCHITECTURE>, so no sysroot or CMAKE_FIND_ROOT_PATH is needed.
# Programs (pkg-config, qemu) are the host's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)

# pkg-config: only the arm64 .pc files (and the architecture-independent ones).
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${DIGITS_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "")

# ctest runs the test executables under qemu-user (and tests/CMakeLists.txt gives the suites a
# DIGITS_BIN wrapper that does the same for the digits executable they start).
# No "-L /usr/aarch64-linux-gnu": with a -L prefix, qemu-aarch64 7.2 (Debian 12) hangs a
# dynamically linked guest at its first fork() or pthread_create() (the child spins; Check forks
# every test, OpenBLAS starts its threads when it loads). The loader it needs instead,
# /lib/ld-linux-aarch64.so.1, and the C library come from libc6:arm64, which the multiarch
# -dev packages above install anyway.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
