// optimisers: written next.
