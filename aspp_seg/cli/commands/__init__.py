"""`aspp-seg` subcommands beside LightningCLI's fit / validate / test / predict, one per
module. Each defines ``main(argv: list[str]) -> None``, which parses `argv` (the
arguments after the subcommand's name) with jsonargparse and raises
`aspp_seg.errors.UserError` for mistakes the user can fix; `aspp_seg.cli.main` lists
the subcommands (`COMMANDS`: name, module, help line) and turns those errors into one
line. A command imports its heavy dependencies (torch, Lightning) inside `main`, so that
its ``--help`` answers at once.
"""
