"""Build hook: the wheel carries the top-level notebooks/ and templates/ (their source of truth)
inside the package, as forensics/notebooks and forensics/templates, where forensics.report.resources
finds them. An editable install copies nothing: it reads the checkout's folders."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("notebooks", "templates")


class BuildWithNotebooks(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder in SHIPPED:
            for source in sorted((HERE / folder).rglob("*")):
                relative = source.relative_to(HERE / folder)
                if source.is_file() and not any(part.startswith(".") for part in relative.parts):
                    target = Path(self.build_lib) / "forensics" / folder / relative
                    self.mkpath(str(target.parent))
                    self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildWithNotebooks})
