"""The command line: ``aspp-seg`` (`main`), its LightningCLI subclass, the config reader
and the subcommands that are not Lightning's (``evaluate``, ``export``, ...)."""
