import pytest
import tvm
from tvm.relax.ir.instrument import WellFormedInstrument


@pytest.fixture(autouse=True)
def well_formed_every_pass():
    """Every pass run inside a quantize test is checked for well-formed Relax afterwards."""
    instrument = WellFormedInstrument()
    with tvm.transform.PassContext(instruments=[instrument]):
        yield
