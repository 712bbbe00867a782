"""cnn_deploy: how many 28x28 tiles per millisecond can this CNN classify on this device?"""

__version__ = "0.1.0"
