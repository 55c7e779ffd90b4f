"""alexnet: AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) as practical software.

The package is split by concern: ``models`` (the family and its layers), ``data``, ``train``,
``evaluate``, ``checkpoint``, ``interop`` and ``cli``. Data flows one way:
source → transforms → loader → model → metrics → report.
"""

__version__ = "0.1.0"
