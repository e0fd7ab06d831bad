"""fundus-seg: the command-line front door shared by every component."""
