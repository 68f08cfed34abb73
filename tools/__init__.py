"""Built-in tools (python sandbox, workspace files, search and browse) land here.

They import only the small protocol modules of `agent` (`agent.tool`,
`agent.events`), never the loop.
"""
