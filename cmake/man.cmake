# Writes the man page digits(1) from the help texts of the built executable:
#   cmake -DDIGITS=path/to/digits -DOUT=digits.1 [-DEMULATOR=...] -P cmake/man.cmake
# The general `digits --help` is the description; each command listed there gets a section
# holding its own `digits CMD --help`, so the page says what the program says, always.
if(NOT DIGITS OR NOT OUT)
  message(FATAL_ERROR "man.cmake: -DDIGITS=EXECUTABLE -DOUT=FILE")
endif()

function(run_help out_var)
  execute_process(COMMAND ${EMULATOR} ${DIGITS} ${ARGN} OUTPUT_VARIABLE text
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "man.cmake: `digits ${ARGN}` failed (${rc}): ${err}")
  endif()
  set(${out_var} "${text}" PARENT_SCOPE)
endfunction()

# troff: a backslash is \e; a line starting with '.' or ''' would be a request: \& before it
function(escape text out_var)
  string(REPLACE "\\" "\\e" text "${text}")
  string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" text "${text}")
  set(${out_var} "${text}" PARENT_SCOPE)
endfunction()

run_help(general --help)
run_help(version --version)
string(STRIP "${version}" version)

# the commands: the lines after "commands:" up to the first empty line, "  NAME  summary"
string(REGEX MATCH "commands:\n(([^\n]+\n)+)" block "${general}")
set(block "${CMAKE_MATCH_1}")
string(REPLACE "\n" ";" lines "${block}")
set(commands "")
foreach(line ${lines})
  if(line MATCHES "^  ([a-z][a-z-]*) ")
    list(APPEND commands ${CMAKE_MATCH_1})
  endif()
endforeach()
list(LENGTH commands count)
if(count LESS 5)
  message(FATAL_ERROR "man.cmake: found only '${commands}' in the commands of `digits --help`")
endif()

escape("${general}" general_text)
set(page ".TH DIGITS 1 \"\" \"${version}\" \"User Commands\"\n")
string(APPEND page ".SH NAME\ndigits \\- train and run the Kaggle digit-recognizer network on the CPU or an NVIDIA GPU\n")
string(APPEND page ".SH SYNOPSIS\n.B digits\n.I command\n[\n.I options\n]\n")
string(APPEND page ".SH DESCRIPTION\n.nf\n${general_text}.fi\n.SH COMMANDS\n")
foreach(command ${commands})
  run_help(help ${command} --help)
  escape("${help}" help_text)
  string(APPEND page ".SS ${command}\n.nf\n${help_text}.fi\n")
endforeach()
string(APPEND page ".SH SEE ALSO\nThe README and docs/ of the source tree.\n")
file(WRITE ${OUT} "${page}")
