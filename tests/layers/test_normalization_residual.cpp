// BatchNorm, Dropout, Residual: written next.
