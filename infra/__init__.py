"""The local stand-ins (moto, the runtime emulator, SageMaker async, Step Functions), the local image build and
`sam local` drivers, and the scripts behind `make demo` and `make docs-config`: run as ``python -m infra.NAME``."""
