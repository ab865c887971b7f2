// IDX reader: written next.
