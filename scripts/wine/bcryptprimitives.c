/* Test-only shim for Debian's wine 8, which lacks bcryptprimitives.dll:
 * Rust's std on Windows draws random bytes from its ProcessPrng. This one
 * forwards to RtlGenRandom (advapi32's SystemFunction036). Built and placed
 * beside the .exe files by scripts/wine-test.sh; never shipped. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
