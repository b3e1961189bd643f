"""cocotb benches of the accelerator's Verilog on Icarus and Verilator (see sim/README.md)."""
