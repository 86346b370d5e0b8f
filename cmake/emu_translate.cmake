# Translates one CUDA source for the emulated device (tests/emu): the two pieces of CUDA syntax
# a C++ compiler cannot take become calls into tests/emu/include/cuda_runtime.h:
#   name<<<grid, block[, shared[, stream]]>>>(args)  ->  dg_emu::launch("name", grid, block...).run(name, args)
#   __shared__ TYPE NAME[DIMS];                       ->  DG_EMU_SHARED(TYPE, NAME, [DIMS]);
# Everything else is compiled as it is. Usage: cmake -DIN=file.cu -DOUT=file.cpp -P emu_translate.cmake
file(READ "${IN}" text)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_]*)[ \t\r\n]*<<<([^>]*)>>>[ \t\r\n]*\\("
       "::dg_emu::launch(\"\\1\", \\2).run(\\1, " text "${text}")
string(REGEX REPLACE "__shared__[ \t]+([A-Za-z_][A-Za-z0-9_ \t]*[A-Za-z0-9_])[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*(\\[[^];]*\\])[ \t]*;"
       "DG_EMU_SHARED(\\1, \\2, \\3);" text "${text}")
string(REGEX REPLACE "__shared__[ \t]+([A-Za-z_][A-Za-z0-9_ \t]*[A-Za-z0-9_])[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*;"
       "DG_EMU_SHARED(\\1, \\2, );" text "${text}")
if(text MATCHES "<<<|__shared__")
  message(FATAL_ERROR "${IN}: a kernel launch or __shared__ declaration the emulation cannot translate")
endif()
get_filename_component(name "${IN}" NAME)
file(WRITE "${OUT}.tmp" "// translated from ${IN} for the emulated device (cmake/emu_translate.cmake)\n#line 1 \"${IN}\"\n${text}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
