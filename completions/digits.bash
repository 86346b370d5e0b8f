# bash completion for digits: commands, then each command's options as its own --help lists
# them (so the completion always matches the executable), then file names.
_digits()
{
    local cur=${COMP_WORDS[COMP_CWORD]}
    local cmd=${COMP_WORDS[1]}
    local digits=${COMP_WORDS[0]}
    if [ "$COMP_CWORD" -eq 1 ]; then
        local commands
        commands=$("$digits" --help 2>/dev/null |
                   sed -n '/^commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p')
        COMPREPLY=($(compgen -W "$commands help --help --version" -- "$cur"))
        return 0
    fi
    if [ "$cmd" = help ] && [ "$COMP_CWORD" -eq 2 ]; then
        COMPREPLY=($(compgen -W "$("$digits" --help 2>/dev/null |
                   sed -n '/^commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p')" -- "$cur"))
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        local options
        options=$("$digits" "$cmd" --help 2>/dev/null |
                  grep -oE '(^|[ ,])--?[a-zA-Z][a-zA-Z0-9-]*' | tr -d ' ,' | sort -u)
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
        return 0
    fi
    COMPREPLY=($(compgen -f -- "$cur"))
    return 0
}
complete -o filenames -F _digits digits
