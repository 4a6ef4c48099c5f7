#!/usr/bin/env python3
"""Link-time stand-ins for the CUDA libraries candle's CUDA backend links against.

candle builds cudarc with `dynamic-linking`, so linking `aisle` with `--features cuda` needs
libcuda (the driver), libnvrtc, libcurand, libcublas and libcublasLt. The driver library only
comes with an NVIDIA driver, and the others are ~600 MB of wheels, so for building on a
machine without a GPU this writes small stub libraries instead: each exports the function
names cudarc declares (read from its sources) and carries the real library's SONAME, so the
binary loads the real libraries on a GPU machine. Stubs are never loaded at run time.

Usage: cuda_stubs.py CUDARC_SRC_DIR OUT_DIR
"""
import pathlib
import re
import subprocess
import sys

# library name, its SONAME (CUDA 13), cudarc's binding module
LIBS = [
    ("cuda", "libcuda.so.1", "driver"),
    ("nvrtc", "libnvrtc.so.13", "nvrtc"),
    ("curand", "libcurand.so.10", "curand"),
    ("cublas", "libcublas.so.13", "cublas"),
    ("cublasLt", "libcublasLt.so.13", "cublaslt"),
]


def main() -> None:
    src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for name, soname, module in LIBS:
        text = (src / "src" / module / "sys" / "mod.rs").read_text()
        symbols = sorted(set(re.findall(r"pub unsafe fn (\w+)\(", text)))
        if not symbols:
            sys.exit(f"cuda_stubs.py: no functions found in cudarc's {module} bindings")
        c_file = out / f"{name}_stub.c"
        c_file.write_text("".join(f"void {s}(void) {{}}\n" for s in symbols))
        lib = out / f"lib{name}.so"
        subprocess.run(
            ["cc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(lib), str(c_file)],
            check=True,
        )
        print(f"{lib}: {len(symbols)} symbols, SONAME {soname}", file=sys.stderr)


if __name__ == "__main__":
    main()
