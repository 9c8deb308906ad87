/*
 * livedump capture restarted: rendered from the capture spec; do not edit.
 * processes: ms-teams.exe
 * statuses: 0xC000000D
 */
#pragma D option quiet

int livedump_hits;

syscall::NtCreateFile:return
/(tolower(execname) == "ms-teams.exe") && ((uint32_t)arg0 == 0xC000000D) && livedump_hits < 2/
{
	livedump_hits++;
	printf("@@livedump begin %d %d %d %d %s:%s 0x%08x %s\n", livedump_hits, walltimestamp, pid, tid, probefunc, probename, (uint32_t)arg0, execname);
	printf("@@livedump ustack");
	ustack(10);
	printf("\n@@livedump end %d\n", livedump_hits);
}

syscall::NtCreateFile:return
/livedump_hits >= 2/
{
	exit(0);
}
