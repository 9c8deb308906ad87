/*
 * processprng.c: a stand-in bcryptprimitives.dll for Wine 8.
 *
 * Go 1.22+ Windows binaries call ProcessPrng from bcryptprimitives.dll at
 * start-up and abort ("bcryptprimitives.dll not found") when it is missing, as
 * it is in Wine 8.0 (newer Wine ships it). This DLL exports exactly that one
 * function, implemented with RtlGenRandom (advapi32!SystemFunction036), which
 * Wine has. It is only ever copied into a throw-away test prefix by
 * .ci/wine/setup, never shipped.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -s -o bcryptprimitives.dll \
 *            processprng.c -ladvapi32
 */
#include <windows.h>

/* RtlGenRandom is exported by advapi32 under this name. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* ProcessPrng fills buf with len random bytes; like Windows' own it never
 * fails (Go's runtime treats FALSE as fatal), so a failure of the underlying
 * generator is reported as FALSE rather than returning unfilled memory. */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE buf, SIZE_T len)
{
	while (len > 0) {
		ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
		if (!SystemFunction036(buf, n))
			return FALSE;
		buf += n;
		len -= n;
	}
	return TRUE;
}
