"""The scripts `kd completion bash|zsh` prints. Each asks `kd completion SHELL --line LINE` what
may come next (kdcli/cli/completion.py) and hands paths to the shell's own file completion."""

BASH = r"""# kd completion for bash. Enable: eval "$(kd completion bash)" in ~/.bashrc
_kd_complete() {
    local -a reply
    mapfile -t reply < <(kd completion bash --line="${COMP_LINE:0:COMP_POINT}" 2>/dev/null)
    local kind="${reply[0]}"
    case "$kind" in
        files|dirs)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen "-${kind:0:1}" -- "${reply[1]}")
            ;;
        words)
            COMPREPLY=("${reply[@]:1}")
            # key=, student. and a,b, continue the same word: no space after them
            if [[ ${#COMPREPLY[@]} -eq 1 && "${COMPREPLY[0]}" == *[=.,/] ]]; then
                compopt -o nospace 2>/dev/null
            fi
            ;;
        *) COMPREPLY=() ;;
    esac
}
complete -F _kd_complete kd
"""

ZSH = r"""#compdef kd
# kd completion for zsh. Enable: eval "$(kd completion zsh)" in ~/.zshrc (after compinit)
_kd_complete() {
    local -a reply spaced joined
    reply=("${(@f)$(kd completion zsh --line="${BUFFER[1,CURSOR]}" 2>/dev/null)}")
    case "${reply[1]}" in
        files) compset -P '*='; _files ;;
        dirs) compset -P '*='; _files -/ ;;
        words)
            local word
            for word in "${(@)reply[2,-1]}"; do
                # key=, student. and a,b, continue the same word: no space after them
                if [[ "$word" == *[=.,/] ]]; then joined+=("$word"); else spaced+=("$word"); fi
            done
            (( ${#spaced} )) && compadd -- "${spaced[@]}"
            (( ${#joined} )) && compadd -S '' -- "${joined[@]}"
            ;;
    esac
}
if (( $+functions[compdef] )); then
    compdef _kd_complete kd
else
    print -u2 'kd completion: run compinit first (autoload -Uz compinit && compinit)'
fi
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH}
