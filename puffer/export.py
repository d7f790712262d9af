"""placeholder"""


def add_export_parser(sub):
    pass
