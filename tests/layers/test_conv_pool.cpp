// Conv2D, MaxPool2D, AvgPool2D: written next.
