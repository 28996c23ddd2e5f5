"""cmschat: integrated CMS chat system."""

__version__ = "0.1.0"
