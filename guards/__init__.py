"""The guard pipeline lands here. Today any bus interceptor can guard a run:
`Agent(guards=[fn])` where `async fn(event) -> Decision | None`."""
