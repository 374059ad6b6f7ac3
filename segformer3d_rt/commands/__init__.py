"""What each subcommand does, called by the CLI after parsing (the CLI itself only parses)."""
