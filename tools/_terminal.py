"""Terminal control sequences: what a terminal acts on, and a model should not see."""

# CSI (colours, cursor moves), OSC (window titles, links), which must end (BEL or ESC \)
# within its line, so a stray ESC ] loses only those two characters, and the other
# two-character escapes. CSI and OSC come first: ESC [ and ESC ] are escapes of their own.
ESCAPES = r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b\n]{0,4096}(?:\x07|\x1b\\)|\x1b[@-Z\\-_]"
