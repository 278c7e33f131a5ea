/* SPDX-License-Identifier: MPL-2.0
 *
 * A C application that publishes its own frames into a call: it draws RGBA frames (a bar that
 * moves over a coloured background), pushes them into customvideosrc with the `push-buffer`
 * action signal, and callsink publishes the track over WHIP.
 *
 * Build and run (the plugin on GST_PLUGIN_PATH, a call server listening):
 *
 *   cc examples/push.c -o push-c $(pkg-config --cflags --libs gstreamer-1.0)
 *   GST_PLUGIN_PATH=target/debug ./push-c http://127.0.0.1:8080 [SECONDS] [CHANNEL] [UID]
 *
 * It pushes at 30 frames per second for SECONDS (default 10), ends the stream with the
 * `end-of-stream` action, waits for EOS on the bus (callsink leaves the call first) and exits 0;
 * on an error it prints the element's message and exits 1.
 */
#include <gst/gst.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WIDTH 320
#define HEIGHT 240
#define FPS 30

/* Fills an RGBA frame: a blue background and a white bar at `frame`'s position. */
static void
draw (guint8 * data, guint frame)
{
  guint bar = (frame * 4) % WIDTH;
  for (guint y = 0; y < HEIGHT; y++) {
    guint8 *row = data + (gsize) y * WIDTH * 4;
    for (guint x = 0; x < WIDTH; x++) {
      gboolean on_bar = x >= bar && x < bar + 16;
      row[x * 4 + 0] = on_bar ? 255 : 0;
      row[x * 4 + 1] = on_bar ? 255 : 0;
      row[x * 4 + 2] = 255;
      row[x * 4 + 3] = 255;
    }
  }
}

/* Prints the error (or warning) in `msg` with the element that posted it. */
static void
print_message (GstMessage * msg)
{
  GError *err = NULL;
  gchar *debug = NULL;
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR)
    gst_message_parse_error (msg, &err, &debug);
  else
    gst_message_parse_warning (msg, &err, &debug);
  fprintf (stderr, "%s from %s: %s\n",
      GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR ? "error" : "warning",
      GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)), err->message);
  g_clear_error (&err);
  g_free (debug);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  if (argc < 2) {
    fprintf (stderr, "usage: %s SERVER_URL [SECONDS] [CHANNEL] [UID]\n", argv[0]);
    return 2;
  }
  const char *server = argv[1];
  guint seconds = argc > 2 ? (guint) strtoul (argv[2], NULL, 10) : 10;
  const char *channel = argc > 3 ? argv[3] : "demo";
  const char *uid = argc > 4 ? argv[4] : "c-app";

  /* No track frame rate: every pushed frame goes out once, stamped when it was pushed. */
  gchar *description = g_strdup_printf ("customvideosrc name=src "
      "caps=video/x-raw,format=RGBA,width=%d,height=%d,framerate=%d/1 "
      "! callsink server=%s channel=%s uid=%s", WIDTH, HEIGHT, FPS, server,
      channel, uid);
  GError *err = NULL;
  GstElement *pipeline = gst_parse_launch (description, &err);
  g_free (description);
  if (pipeline == NULL) {
    fprintf (stderr, "cannot build the pipeline: %s (is the plugin on "
        "GST_PLUGIN_PATH? gst-inspect-1.0 customvideo)\n", err->message);
    g_clear_error (&err);
    return 1;
  }
  GstElement *src = gst_bin_get_by_name (GST_BIN (pipeline), "src");
  GstBus *bus = gst_element_get_bus (pipeline);
  int status = 0;

  if (gst_element_set_state (pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    fprintf (stderr, "the pipeline does not start\n");
    status = 1;
  }
  for (guint i = 0; status == 0 && i < seconds * FPS; i++) {
    GstBuffer *buffer = gst_buffer_new_allocate (NULL, WIDTH * HEIGHT * 4, NULL);
    GstMapInfo map;
    gst_buffer_map (buffer, &map, GST_MAP_WRITE);
    draw (map.data, i);
    gst_buffer_unmap (buffer, &map);

    GstFlowReturn ret = GST_FLOW_OK;
    g_signal_emit_by_name (src, "push-buffer", buffer, &ret);
    gst_buffer_unref (buffer);
    if (ret != GST_FLOW_OK) {
      fprintf (stderr, "push-buffer: %s\n", gst_flow_get_name (ret));
      status = 1;
    }
    /* An error posted meanwhile ends the run. */
    GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
    if (msg != NULL) {
      print_message (msg);
      gst_message_unref (msg);
      status = 1;
    }
    g_usleep (G_USEC_PER_SEC / FPS);
  }

  if (status == 0) {
    GstFlowReturn ret = GST_FLOW_OK;
    g_signal_emit_by_name (src, "end-of-stream", &ret);
    GstMessage *msg = gst_bus_timed_pop_filtered (bus, 10 * GST_SECOND,
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
    if (msg == NULL) {
      fprintf (stderr, "no EOS within 10 s of the end of the stream\n");
      status = 1;
    } else {
      if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
        print_message (msg);
        status = 1;
      } else {
        printf ("PUSHED %u frames, EOS\n", seconds * FPS);
      }
      gst_message_unref (msg);
    }
  }

  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (src);
  gst_object_unref (pipeline);
  return status;
}
